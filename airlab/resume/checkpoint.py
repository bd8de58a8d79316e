"""The one checkpoint loader every task uses: find (``ckpt_path=last``), read, and load into a model.

A checkpoint of ``scripts/train.py`` holds the module's ``state_dict`` and ``airlab_config``, the
resolved config it was trained with. Every failure is one line naming the file.

**Reading never runs code.** airlab's checkpoints hold tensors and plain containers only (the config as
a plain dict, Pyro's state and the random generators as tensors), and every reader opens them with
``torch.load(weights_only=True)``: this loader, Lightning's resume (``trainer.fit(weights_only=True)``),
evaluate, the variance report and the study. A file that needs anything else unpickled is refused in one
line before any of it is built (so a ``__reduce__`` in it never runs). A file you trust that holds numpy
arrays (a random state saved as numpy) can be converted, explicitly, with
``python -m airlab.resume.checkpoint convert IN OUT`` (:func:`convert_checkpoint`): it admits numpy's array
types only, never arbitrary code, and writes the same content as tensors.

**Resuming in place.** A resume whose checkpoint lies in this run's own folder (``<run>/checkpoints/``)
continues that run (:func:`continue_in_place`): its loggers pick up after the checkpoint's step. With
``resume_in_place=true`` that is required: the run folder must be the checkpoint's (pass
``hydra.run.dir=<run>``), else the run is refused in one line, and ``ckpt_path=last`` takes this
folder's own ``last.ckpt`` first. Without it, a resume goes to a new folder (the default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from airlab.compat.torch_internals import numpy_array_types
from airlab.config.interpolation import interpolation_source
from airlab.config.replay import config_differences
from airlab.contracts.model import GenerativeModel
from airlab.errors import CheckpointError, ConfigError
from airlab.resume.training_state import CONFIG_KEY, NUM_TRAIN_KEY, PARAM_STORE_KEY
from airlab.tracking.sweep import job_checkpoint

log = logging.getLogger(__name__)

MODEL_PREFIX = "model."
#: The folder of a run's checkpoints (``callbacks.model_checkpoint.dirpath``'s last part).
CHECKPOINTS_DIR = "checkpoints"


def resolve_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path``: a file, or ``last`` for the newest ``last.ckpt`` of this task's earlier runs (with
    ``resume_in_place=true``: this run folder's own, if it has one). With ``resume_sweep=true``, a sweep
    job's own ``last.ckpt`` (from an unfinished earlier run) comes first."""
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
        own = here / CHECKPOINTS_DIR / "last.ckpt"
        if cfg.get("resume_in_place") and own.is_file():
            log.info("resuming in place from %s", own)
            return str(own)
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


@dataclasses.dataclass(frozen=True)
class InPlace:
    """A resume that continues its checkpoint's run folder ``run_dir`` after ``global_step``."""

    run_dir: Path
    global_step: int


def checkpoint_run_dir(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/FILE``), or None for a file elsewhere."""
    path = Path(ckpt_path).resolve()
    return path.parent.parent if path.parent.name == CHECKPOINTS_DIR else None


def continue_in_place(
    cfg: DictConfig, ckpt_path: str | None, checkpoint: dict[str, Any] | None
) -> InPlace | None:
    """The resume in place of ``ckpt_path`` (read as ``checkpoint``), when it lies in this run's folder
    ``paths.output_dir``; else None, a resume into a new folder. With ``resume_in_place=true`` anything
    else is refused in one line: no ``ckpt_path``, or a checkpoint of another run folder (the run folder
    is Hydra's, made before the task starts: the line says to pass ``hydra.run.dir=<run>``)."""
    wanted = bool(cfg.get("resume_in_place"))
    if ckpt_path is None or checkpoint is None:
        if wanted:
            raise ConfigError(
                "resume_in_place", "needs ckpt_path=<run>/checkpoints/last.ckpt (or ckpt_path=last)"
            )
        return None
    run_dir = checkpoint_run_dir(ckpt_path)
    here = Path(cfg.paths.output_dir).resolve()
    if run_dir == here:
        step = int(checkpoint.get("global_step", 0))
        log.info("resuming in place: %s continues after step %d", here, step)
        return InPlace(here, step)
    if not wanted:
        return None
    if run_dir is None:
        raise ConfigError(
            "resume_in_place",
            f"{ckpt_path} is not in a run folder's {CHECKPOINTS_DIR}/; resume it with resume_in_place=false",
        )
    raise ConfigError(
        "resume_in_place",
        f"{ckpt_path} belongs to the run folder {run_dir}, not to this run's ({here}); pass "
        f"hydra.run.dir={run_dir} to continue it there, or resume_in_place=false for a new folder",
    )


def load_checkpoint(path: str | Path | None) -> dict[str, Any]:
    """The airlab checkpoint dict at ``path``, on the CPU; refuses anything else in one line."""
    if path is None or str(path) in ("", "None"):
        raise ConfigError("ckpt_path", "required: pass ckpt_path=<run>/checkpoints/last.ckpt")
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ckpt_path", f"file not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))  # the first object it would have had to build
        if found is None:  # no object in it at all: a damaged or foreign file
            raise CheckpointError(
                f"ckpt_path: {path} is not a readable checkpoint (UnpicklingError)"
            ) from None
        what = f" ({found.group(1)})"
        raise CheckpointError(
            f"ckpt_path: {path} holds objects that are not tensors or plain data{what}, so it was not "
            "loaded and nothing in it ran; airlab writes none. If you trust the file (an old airlab "
            "checkpoint), convert it: python -m airlab.resume.checkpoint convert FILE NEW_FILE"
        ) from None
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


def check_budget(checkpoint: dict[str, Any], trainer: DictConfig, ckpt_path: str) -> None:
    """Refuse a ``trainer.max_steps`` or ``trainer.max_epochs`` that the checkpoint has already reached:
    there would be nothing to train (Lightning ends such a run in a traceback)."""
    step, epoch = int(checkpoint.get("global_step", 0)), int(checkpoint.get("epoch", 0))
    max_steps, max_epochs = trainer.get("max_steps", -1), trainer.get("max_epochs")
    if max_steps not in (None, -1) and step >= int(max_steps):
        raise ConfigError(
            "trainer.max_steps",
            f"{max_steps} is not above the {step} steps {ckpt_path} has trained; "
            f"set trainer.max_steps above {step} to train on",
        )
    if max_epochs not in (None, -1) and epoch >= int(max_epochs):
        raise ConfigError(
            "trainer.max_epochs",
            f"{max_epochs} is not above the {epoch} epochs {ckpt_path} has trained; "
            f"set trainer.max_epochs above {epoch} to train on",
        )


def check_schedule(trained: dict[str, Any], cfg: DictConfig, ckpt_path: str) -> None:
    """Refuse another learning-rate schedule than the checkpoint's, or other settings of it: torch
    restores a schedule's milestones, gamma or T_max with its state, so a changed one would be ignored."""
    old = trained.get("_target_")
    schedule = cfg.get("scheduler")
    new_settings = OmegaConf.to_container(schedule, resolve=True) if schedule is not None else {}
    new = new_settings.get("_target_")
    if old != new:
        raise ConfigError(
            "scheduler",
            f"{ckpt_path} was trained with the learning-rate schedule {old or 'none'}, the config "
            f"has {new or 'none'}; resume with the schedule it was trained with, or start a new run",
        )
    changed = sorted(k for k in {*trained, *new_settings} if trained.get(k) != new_settings.get(k))
    if changed:
        key = f"scheduler.{changed[0]}"
        source = interpolation_source(cfg, key)
        value, new_value = (
            json.dumps(d.get(changed[0]), separators=(",", ":")) for d in (trained, new_settings)
        )
        raise ConfigError(
            key,
            f"{new_value}{f' (from {source})' if source else ''} differs from the {value} "
            f"{ckpt_path} was trained with, and a resumed schedule keeps its own; set {key}={value} to "
            "resume, or start a new run",
        )


def check_training_state(
    module: pl.LightningModule, checkpoint: dict[str, Any], cfg: DictConfig, ckpt_path: str
) -> None:
    """Refuse an optimizer or estimator state that does not fit the config: another optimizer class or
    learning-rate schedule, other parameter groups, or decaying-average baselines that the config would
    silently drop. Warn (and go on) when the training data has another size than the checkpoint's."""
    trained = checkpoint[CONFIG_KEY]
    old, new = trained.get("optim", {}).get("_target_"), cfg.optim.get("_target_")
    if old is not None and old != new:
        raise ConfigError(
            "optim",
            f"{ckpt_path} holds the state of {old}, not of {new}; resume with the optimizer it was trained "
            "with (or start a new run)",
        )
    check_schedule(trained.get("scheduler") or {}, cfg, ckpt_path)
    saved = (checkpoint.get("optimizer_states") or [{}])[0].get("param_groups", [])
    wanted = module.parameter_groups()
    sizes = [len(g["params"]) for g in saved], [len(g["params"]) for g in wanted]
    if saved and sizes[0] != sizes[1]:
        raise CheckpointError(
            f"ckpt_path: {ckpt_path} has optimizer groups of {sizes[0]} tensors, the config {sizes[1]} "
            f"({', '.join(g['name'] for g in wanted)}); resume with the config it was trained with"
        )
    if checkpoint.get(PARAM_STORE_KEY) and not module.model.uses_decaying_avg_baseline():
        raise CheckpointError(
            f"ckpt_path: {ckpt_path} holds decaying-average baselines ({len(checkpoint[PARAM_STORE_KEY])} "
            "entries) that this config does not use; resume with the baseline it was trained with"
        )
    old_size, size = checkpoint.get(NUM_TRAIN_KEY), module.num_train
    if old_size is not None and size is not None and old_size != size:
        log.warning(
            "data: %s was trained on %d training items, this data has %d; resuming anyway (the epoch "
            "resumes at the same batch count, and the dataset scale N/B is the new data's)",
            ckpt_path,
            old_size,
            size,
        )


def check_resumable(
    module: pl.LightningModule, checkpoint: dict[str, Any], cfg: DictConfig, ckpt_path: str
) -> None:
    """Refuse in one line, before any work, a checkpoint that training cannot resume ``module`` (an
    ``SVIModule``) from: another model class, weights whose keys or shapes differ, a budget already
    reached (unless a sweep resumes its own job), an optimizer or estimator state that does not fit."""
    check_model_target(checkpoint[CONFIG_KEY], cfg, ckpt_path)
    check_fits(
        module.state_dict(), checkpoint["state_dict"], checkpoint[CONFIG_KEY], cfg, ckpt_path, "resume"
    )
    if not cfg.get("resume_sweep"):
        check_budget(checkpoint, cfg.trainer, ckpt_path)
    check_training_state(module, checkpoint, cfg, ckpt_path)


def load_model_weights(
    model: GenerativeModel, checkpoint: dict[str, Any], cfg: DictConfig, ckpt_path: str
) -> None:
    """Load the checkpoint's weights into ``model`` (built from ``cfg``), refusing in one line another
    model class or weights that do not fit."""
    trained = checkpoint[CONFIG_KEY]
    check_model_target(trained, cfg, ckpt_path)
    state = model_state(checkpoint)
    check_fits(model.state_dict(), state, trained, cfg, ckpt_path, "evaluate")
    model.load_state_dict(state)


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


# -- conversion of a trusted file ------------------------------------------------------------------


def as_plain(value: Any) -> Any:
    """``value`` with numpy arrays and scalars turned into tensors and Python numbers (containers kept)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(as_plain(v) for v in value)
    return value


def convert_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Rewrite a trusted checkpoint that holds numpy arrays as one of tensors and plain data only, and
    check that ``target`` loads with ``weights_only=True``. Objects of any other type are still refused."""
    with torch.serialization.safe_globals(numpy_array_types()):
        try:
            checkpoint = torch.load(source, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"{source}: holds objects other than tensors, numpy arrays and plain data; not converted "
                f"({str(err).splitlines()[0][:200]})"
            ) from None
    target = Path(target)
    torch.save(as_plain(checkpoint), target)
    torch.load(target, map_location="cpu", weights_only=True)
    return target


def main(argv: list[str] | None = None) -> None:
    """``python -m airlab.resume.checkpoint convert IN OUT``."""
    from airlab.errors import report_user_errors

    parser = argparse.ArgumentParser(prog="python -m airlab.resume.checkpoint", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="rewrite a trusted checkpoint as tensors and plain data")
    convert.add_argument("source")
    convert.add_argument("target")
    args = parser.parse_args(argv)
    written = report_user_errors(convert_checkpoint, args.source, args.target)
    print(f"wrote {written}: loads with torch.load(weights_only=True)")


if __name__ == "__main__":
    main()
