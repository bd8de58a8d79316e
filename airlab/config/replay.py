"""Replaying the command line's overrides on the config a checkpoint was trained with.

A checkpoint holds ``airlab_config``, the resolved training config. The overrides of ``evaluate.py``
are replayed on it: a key override (``data.batch_size=64``) takes the value Hydra composed for that
key; a group override (``model=air``) takes the whole composed node, unless it names the option the
checkpoint already uses (then only the key overrides apply, so the trained sizes survive). Overrides of
the evaluation itself (``ckpt_path``, ``eval.*``, ``paths.*``, ``hydra.*``, ``task_name``) are not
replayed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from airlab.config import flatten_config
from airlab.errors import ConfigError

NOT_REPLAYED = ("ckpt_path", "eval", "paths", "hydra", "task_name")
# Presets that rewrite many groups at once: replaying them on a trained config is ambiguous.
GLOBAL_GROUPS = ("experiment", "debug", "hparams_search")


def _root(key: str) -> str:
    return key.split(".", 1)[0].split("/", 1)[0]


def merge_overrides(
    trained: dict[str, Any], composed: DictConfig, overrides: Sequence[str], groups: Collection[str]
) -> DictConfig:
    """The trained config with the user's overrides replayed on it (see the module docstring)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.create(trained)
    parsed = OverridesParser.create().parse_overrides(list(overrides)) if overrides else []
    replayed = [o for o in parsed if _root(o.key_or_group) not in NOT_REPLAYED]
    group_overrides = [o for o in replayed if o.key_or_group in groups and "." not in o.key_or_group]
    key_overrides = [o for o in replayed if o not in group_overrides]
    with open_dict(cfg):
        for override in group_overrides:
            group = override.key_or_group
            if group in GLOBAL_GROUPS:
                raise ConfigError(
                    group,
                    f"{override.input_line} rewrites the trained config; evaluate.py takes the "
                    "checkpoint's config, so override single keys or the model/data groups instead",
                )
            new = composed.get(group)
            old = cfg.get(group)
            old_target = old.get("_target_") if isinstance(old, DictConfig) else None
            if new is None or (isinstance(new, DictConfig) and new.get("_target_") == old_target):
                continue  # the option it was trained with: keep the trained values
            cfg[group] = OmegaConf.to_container(new, resolve=True) if isinstance(new, DictConfig) else new
        for override in key_overrides:
            key = override.key_or_group
            if override.is_delete():
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(cfg, parent) if parent else cfg
                if isinstance(node, DictConfig) and leaf in node:
                    del node[leaf]
                continue
            value = OmegaConf.select(composed, key, throw_on_missing=False)
            if isinstance(value, DictConfig | ListConfig):
                value = OmegaConf.to_container(value, resolve=True)
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return cfg


def config_differences(
    trained: dict[str, Any], cfg: DictConfig, groups: Sequence[str], limit: int = 3
) -> list[str]:
    """``key=new (trained with old)`` for the keys of ``groups`` that differ from the trained config:
    only ``_target_`` when the class changed (every other key then differs too), at most ``limit``."""
    current = OmegaConf.to_container(cfg, resolve=True)
    lines = []
    for group in groups:
        old = flatten_config(trained.get(group, {}), group)
        new = flatten_config(current.get(group, {}), group)
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if f"{group}._target_" in keys:
            keys = [f"{group}._target_"]
        lines += [f"{key}={new.get(key)} (trained with {old.get(key)})" for key in keys]
    if len(lines) > limit:
        lines = lines[:limit] + [f"{len(lines) - limit} more"]
    return lines
