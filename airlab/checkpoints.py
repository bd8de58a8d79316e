"""The one checkpoint loader every task uses: find (``ckpt_path=last``), read, and load into a model.

A checkpoint of ``scripts/train.py`` holds the module's ``state_dict`` and ``airlab_config``, the
resolved config it was trained with. Every failure is one line naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from airlab.build import build_model
from airlab.config.replay import config_differences
from airlab.errors import CheckpointError, ConfigError
from airlab.models.base import GenerativeModel
from airlab.svi_module import CONFIG_KEY
from airlab.sweep import job_checkpoint

log = logging.getLogger(__name__)

MODEL_PREFIX = "model."


def resolve_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path``: a file, or ``last`` for the newest ``last.ckpt`` of this task's earlier runs. With
    ``resume_sweep=true``, a sweep job's own ``last.ckpt`` (from an unfinished earlier run) comes first."""
    own = job_checkpoint(cfg)
    if own is not None:
        log.info("resume_sweep: resuming this job from %s", own)
        return str(own)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        root = Path(cfg.paths.log_dir) / cfg.task_name
        here = Path(cfg.paths.output_dir).resolve()
        found = [p for p in root.glob("**/checkpoints/last.ckpt") if here not in p.resolve().parents]
        if not found:
            raise ConfigError("ckpt_path", f"'last' found no checkpoints/last.ckpt under {root}")
        newest = max(found, key=lambda p: p.stat().st_mtime)
        log.info("resuming from %s", newest)
        return str(newest)
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError("ckpt_path", f"file not found: {path}")
    return str(path)


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


def check_model_target(trained: dict[str, Any], cfg: DictConfig, ckpt_path: str) -> None:
    """Refuse a config whose model class differs from the one the checkpoint was trained with."""
    old, new = trained.get("model", {}).get("_target_"), cfg.model.get("_target_")
    if old != new:
        raise CheckpointError(
            f"ckpt_path: {ckpt_path} holds a {str(old).rsplit('.', 1)[-1]} model "
            f"(model._target_={old}) but the config builds {new}; drop the model override"
        )


def check_fits(
    expected: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    trained: dict[str, Any],
    cfg: DictConfig,
    ckpt_path: str,
    task: str,
) -> None:
    """Refuse in one line naming ``ckpt_path`` and the first mismatching key a checkpoint ``state`` that
    does not fit ``expected`` (the configured model's ``state_dict``); ``trained`` is its config and
    ``task`` the verb of the advice (``evaluate``, ``resume``)."""
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
            f"parameter {problems[0]}{extra}; {task} it with the config it was trained with"
        )


def check_resumable(
    module: pl.LightningModule, checkpoint: dict[str, Any], cfg: DictConfig, ckpt_path: str
) -> None:
    """Refuse in one line a checkpoint that training cannot resume ``module`` (an ``SVIModule``) from:
    another model class, or weights whose keys or shapes differ (before Lightning fails with a traceback)."""
    check_model_target(checkpoint[CONFIG_KEY], cfg, ckpt_path)
    check_fits(
        module.state_dict(), checkpoint["state_dict"], checkpoint[CONFIG_KEY], cfg, ckpt_path, "resume"
    )


def load_model(
    cfg: DictConfig, datamodule: pl.LightningDataModule, checkpoint: dict[str, Any], ckpt_path: str
) -> GenerativeModel:
    """Build the configured model (:func:`airlab.build.build_model`) and load the checkpoint's weights,
    refusing any mismatch in one line."""
    trained = checkpoint[CONFIG_KEY]
    check_model_target(trained, cfg, ckpt_path)
    model = build_model(cfg.model, datamodule)
    state = model_state(checkpoint)
    check_fits(model.state_dict(), state, trained, cfg, ckpt_path, "evaluate")
    model.load_state_dict(state)
    return model


def load_weights(model: GenerativeModel, state: dict[str, torch.Tensor], name: str) -> None:
    """Load ``state`` into ``model`` leniently: tensors of parts only some configurations have (AIR's
    NVIL network) may be missing or unused (logged); a tensor whose shape differs is refused in one line."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        lines = str(err).splitlines()
        detail = lines[1].strip() if len(lines) > 1 else str(err)
        raise CheckpointError(f"ckpt_path: weights do not fit configuration {name}: {detail}") from None
    if missing:
        log.info(
            "%s: %d tensors not in the weights, freshly initialised: %s", name, len(missing), missing[:5]
        )
    if unexpected:
        log.info("%s: %d tensors of the weights unused: %s", name, len(unexpected), unexpected[:5])
