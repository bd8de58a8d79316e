"""Configs: checked against the signatures they build, composed inside a task, replayed on a checkpoint.

May import: contracts, utils.

Config validation and helpers.

An option's type, default, range and choices are written once, in the signature of the class the config
builds (``Annotated[float, Range(gt=0, lt=1)] = 0.01``, markers from :mod:`airlab.config.options`); its
YAML carries the value a user edits. :func:`validate_config` checks a composed config against those
signatures before anything is built (:mod:`airlab.config.validate`).
"""

from __future__ import annotations

from typing import Any

import torch

from airlab.config.validate import check_node, validate_config
from airlab.contracts.options import Excluded, OneOf, Range
from airlab.errors import ConfigError

__all__ = [
    "Excluded",
    "OneOf",
    "Range",
    "check_node",
    "flatten_config",
    "resolve_device",
    "validate_config",
]


def flatten_config(node: Any, prefix: str = "") -> dict[str, int | float | str | bool]:
    """``{"model": {"z_dim": 50}}`` -> ``{"model.z_dim": 50}``; lists and None become strings."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(node, int | float | str | bool):
        return {prefix: node}
    return {prefix: str(node)}


def resolve_device(name: str, key: str) -> torch.device:
    """``auto`` (a GPU when one is visible), ``cpu`` or ``cuda`` (refused when no GPU is visible)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(key, "cuda was asked for but no GPU is visible; use auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
