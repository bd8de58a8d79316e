"""Where a config value comes from: a key written as one interpolation (``T_max: ${trainer.max_steps}``)
takes another key's value, and an error about it should name that key too."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf


def interpolation_source(cfg: DictConfig, key: str) -> str | None:
    """The key whose value ``key`` takes when it is written as one interpolation (``T_max:
    ${trainer.max_steps}``), else None: an error about ``key`` then names the key to change."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
    if not isinstance(node, DictConfig) or leaf not in node:
        return None
    raw = OmegaConf.to_container(node, resolve=False).get(leaf)
    match = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return match.group(1) if match else None
