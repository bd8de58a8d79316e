"""Start-up validation of a composed config, with one-line errors that name the key.

Each group option has a schema: a dataclass whose fields give the type (checked and converted by
OmegaConf's structured configs, which also reject unknown keys) and whose field metadata give the
valid range or choices. ``validate_config`` checks every group whose ``_target_`` has a schema;
a group built from a user's own class is left to that class.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from airlab.errors import ConfigError

# -- field helpers: a default plus the rule the value must meet ------------------------------------


def at_least(default: Any, minimum: float, *, optional: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"min": minimum, "optional": optional})


def greater_than(default: Any, bound: float, *, optional: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"gt": bound, "optional": optional})


def between(
    default: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Any:
    return dataclasses.field(
        default=default, metadata={"range": (low, high, low_open, high_open), "optional": optional}
    )


def one_of(default: Any, choices: Sequence[Any]) -> Any:
    return dataclasses.field(default=default, metadata={"choices": tuple(choices)})


def list_field(default: Sequence[Any]) -> Any:
    return dataclasses.field(default_factory=lambda: list(default))


# -- the checks --------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_field(key: str, value: Any, meta: dict[str, Any]) -> None:
    if value is None:
        if meta and not meta.get("optional", True) and "choices" not in meta:
            raise ConfigError(key, "must be set (null is not valid)")
        return
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(key, "must be a number, not nan")
    if "choices" in meta and value not in meta["choices"]:
        valid = ", ".join(str(c) for c in meta["choices"])
        raise ConfigError(key, f"{_describe(value)} is not valid; choose one of: {valid}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(key, f"{_describe(value)} is out of range; must be >= {meta['min']}")
    if "gt" in meta and value <= meta["gt"]:
        raise ConfigError(key, f"{_describe(value)} is out of range; must be > {meta['gt']}")
    if "range" in meta:
        low, high, low_open, high_open = meta["range"]
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            raise ConfigError(
                key, f"{_describe(value)} is out of range; must be in {left}{low}, {high}{right}"
            )


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def check_schema(prefix: str, schema: type, node: Any) -> Any:
    """Type-check ``node`` against ``schema`` and apply the field rules; return the typed object."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as err:
        key = _join(prefix, err.full_key) if getattr(err, "full_key", None) else prefix
        detail = str(err).splitlines()[0]
        if "not in struct" in detail or "Key '" in detail and "not" in detail:
            valid = ", ".join(f.name for f in dataclasses.fields(schema) if not f.name.startswith("_"))
            raise ConfigError(key, f"unknown key; valid keys: {valid}") from None
        raise ConfigError(key, f"wrong type ({detail})") from None
    for spec in dataclasses.fields(schema):
        check_field(_join(prefix, spec.name), typed[spec.name], dict(spec.metadata))
    obj = OmegaConf.to_object(typed)
    if hasattr(obj, "check"):
        obj.check(prefix)
    return obj


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first bad value in the groups that have schemas."""
    from airlab.config.schemas import GROUP_SCHEMAS, TopLevel

    top = {f.name: cfg.get(f.name) for f in dataclasses.fields(TopLevel) if f.name in cfg}
    check_schema("", TopLevel, top)
    for group, by_target in GROUP_SCHEMAS.items():
        node = cfg.get(group)
        if node is None:
            continue
        target = node.get("_target_")
        schema = by_target.get(target)
        if schema is not None:
            check_schema(group, schema, node)


def resolve_device(name: str, key: str) -> torch.device:
    """``auto`` (a GPU when one is visible), ``cpu`` or ``cuda`` (refused when no GPU is visible)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(key, "cuda was asked for but no GPU is visible; use auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
