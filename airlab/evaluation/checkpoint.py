"""Loading a checkpoint with the config it was trained with, the user's overrides applied on top.

A checkpoint holds ``airlab_config``, the resolved training config. The command-line overrides of
``evaluate.py`` are replayed on it: a key override (``data.batch_size=64``) takes the value Hydra
composed for that key; a group override (``model=air``) takes the whole composed node, unless it
names the option the checkpoint already uses (then only the key overrides apply, so the trained
sizes survive). Overrides of the evaluation itself (``ckpt_path``, ``eval.*``, ``paths.*``,
``hydra.*``, ``task_name``) are not replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from airlab.config import flatten_config
from airlab.errors import CheckpointError, ConfigError
from airlab.models.base import GenerativeModel
from airlab.svi_module import CONFIG_KEY

log = logging.getLogger(__name__)

NOT_REPLAYED = ("ckpt_path", "eval", "paths", "hydra", "task_name")
# Presets that rewrite many groups at once: replaying them on a trained config is ambiguous.
GLOBAL_GROUPS = ("experiment", "debug", "hparams_search")
MODEL_PREFIX = "model."


def load_checkpoint(path: str | Path | None) -> dict[str, Any]:
    """The airlab checkpoint dict at ``path``, on the CPU; refuses anything else in one line."""
    if path is None or str(path) in ("", "None"):
        raise ConfigError("ckpt_path", "required: pass ckpt_path=<run>/checkpoints/last.ckpt")
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ckpt_path", f"file not found: {path}")
    try:
        # Our own checkpoints hold configs and Pyro state beside the tensors; weights_only rejects them.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"ckpt_path: {path} is not a readable checkpoint ({type(err).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or CONFIG_KEY not in checkpoint:
        raise CheckpointError(
            f"ckpt_path: {path} is not an airlab checkpoint (no state_dict/{CONFIG_KEY}); "
            "use a checkpoints/*.ckpt written by scripts/train.py"
        )
    return checkpoint


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The generative model's weights: the module's ``model.*`` entries, prefix removed."""
    return {
        key[len(MODEL_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(MODEL_PREFIX)
    }


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


def check_model_target(trained: dict[str, Any], cfg: DictConfig, ckpt_path: str) -> None:
    """Refuse a config whose model class differs from the one the checkpoint was trained with."""
    old, new = trained.get("model", {}).get("_target_"), cfg.model.get("_target_")
    if old != new:
        raise CheckpointError(
            f"ckpt_path: {ckpt_path} holds a {str(old).rsplit('.', 1)[-1]} model "
            f"(model._target_={old}) but the config builds {new}; drop the model override"
        )


def load_model(
    cfg: DictConfig, image_shape: Sequence[int], checkpoint: dict[str, Any], ckpt_path: str
) -> GenerativeModel:
    """Build the configured model and load the checkpoint's weights, refusing any mismatch in one line."""
    trained = checkpoint[CONFIG_KEY]
    check_model_target(trained, cfg, ckpt_path)
    model = instantiate(cfg.model, image_shape=tuple(image_shape))
    state = model_state(checkpoint)
    expected = model.state_dict()
    problems = [f"{k} is missing from the checkpoint" for k in expected if k not in state]
    problems += [f"{k} is in the checkpoint but not in the model" for k in state if k not in expected]
    problems += [
        f"{k} has shape {list(state[k].shape)} in the checkpoint but {list(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        # The model's keys explain most mismatches; data keys only matter through the image shape.
        changed = config_differences(trained, cfg, ("model",)) or config_differences(trained, cfg, ("data",))
        because = f"the config has {', '.join(changed)}" if changed else "the model does not match"
        extra = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise CheckpointError(
            f"ckpt_path: {ckpt_path} does not fit the config: {because}; "
            f"parameter {problems[0]}{extra}; evaluate it with the config it was trained with"
        )
    model.load_state_dict(state)
    return model
