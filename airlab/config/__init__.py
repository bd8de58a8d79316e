"""Config schemas, start-up validation and config helpers."""

from __future__ import annotations

from typing import Any

from airlab.config.validation import resolve_device, validate_config

__all__ = ["flatten_config", "resolve_device", "validate_config"]


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
