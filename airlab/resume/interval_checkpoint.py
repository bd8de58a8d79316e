"""Checkpoints at an interval, always at the end of training and when the run is interrupted; every
checkpoint is written atomically."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor

from airlab.compat.lightning_internals import ModelCheckpointSteps
from airlab.contracts.options import ChecksOptions
from airlab.errors import ConfigError
from airlab.estimators.nonfinite import all_finite
from airlab.utils.atomic import atomic_path

log = logging.getLogger(__name__)

#: Lightning's save intervals, of which a ModelCheckpoint takes one.
INTERVALS = ("every_n_epochs", "every_n_train_steps", "train_time_interval")


def interrupting_signal(exception: BaseException) -> str | None:
    """``SIGTERM`` or ``SIGINT`` when ``exception`` is how Lightning reports that signal, else ``None``."""
    if isinstance(exception, SIGTERMException):
        return "SIGTERM"
    if isinstance(exception, KeyboardInterrupt):
        return "SIGINT"
    return None


class IntervalCheckpoint(ChecksOptions, ModelCheckpointSteps):
    """Lightning's ``ModelCheckpoint`` that also saves when training ends between intervals or is
    interrupted, and never leaves a half-written checkpoint.

    Writing a checkpoint of the VAE takes about 15 ms, several per cent of a short MNIST epoch, so
    the default config saves every few epochs. Lightning alone would then leave ``last.ckpt`` behind
    the final weights (and miss the end of a run stopped by ``max_steps`` or ``max_time``); this
    saves the top-k candidate and ``last.ckpt`` at the end unless that step was already saved.

    SIGTERM or SIGINT (Ctrl+C) during training saves ``last.ckpt`` for the step reached and logs its
    path (:meth:`on_exception`). Each file is written to a temporary file beside it and renamed over
    it (:func:`airlab.utils.atomic.atomic_path`), so a crash or a full disk during a save leaves the previous
    checkpoint intact; after SIGKILL, ``ckpt_path=last`` loses at most the steps since the last save
    (``every_n_train_steps``).
    """

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], prefix: str) -> None:
        """Refuse two save intervals at once: Lightning saves on one of ``every_n_train_steps``,
        ``every_n_epochs`` and ``train_time_interval`` (and stops with a traceback otherwise)."""
        chosen = [key for key in INTERVALS if options.get(key) not in (None, 0)]
        if len(chosen) > 1:
            first, other = chosen[-1], chosen[0]
            raise ConfigError(
                f"{prefix}.{first}",
                f"{options[first]!r} cannot be combined with {prefix}.{other}={options[other]!r}: "
                f"checkpoints are saved on one interval; add {prefix}.{other}=null",
            )

    def write_file(self, trainer: pl.Trainer, filepath: str) -> None:
        """Lightning's save, through a temporary file that rank 0 (the only writer) renames over
        ``filepath``; the other ranks take part in the collective ``save_checkpoint`` only."""
        if trainer.is_global_zero:
            with atomic_path(filepath) as tmp:
                trainer.save_checkpoint(tmp, self.save_weights_only)
        else:
            trainer.save_checkpoint(filepath, self.save_weights_only)

    def keeps_as_best(self, trainer: pl.Trainer, candidates: dict[str, Tensor]) -> bool:
        """Not a model that is not finite: a nan/inf monitored value (Lightning would rank it as the worst,
        and keep it when it is the only one) or weights. Such a model is never saved as the best;
        ``last.ckpt`` still records where the run is."""
        value = candidates.get(self.monitor) if self.monitor else None
        weights = [p.detach() for p in trainer.lightning_module.parameters()]
        if (value is not None and not torch.isfinite(torch.as_tensor(value)).all()) or not all_finite(
            weights
        ):
            log.warning(
                "step %d: %s is not finite; not saved as a best checkpoint",
                trainer.global_step,
                f"{self.monitor}={float(value)}" if value is not None else "the model",
            )
            return False
        return True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the top-k candidate and ``last.ckpt`` for the final step unless already saved."""
        if not self.step_already_saved(trainer):
            self.save_best_candidate_now(trainer)
            self.save_last_now(trainer)
        super().on_train_end(trainer, pl_module)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """On SIGTERM or SIGINT, save ``last.ckpt`` for the current step (unless that step is already
        saved) and log its path; other exceptions are Lightning's (``save_on_exception``)."""
        signal_name = interrupting_signal(exception)
        if signal_name is None:
            super().on_exception(trainer, pl_module, exception)
            return
        step = trainer.global_step
        if not self.save_last:
            log.warning(
                "interrupted by %s at step %d: save_last is off, no checkpoint saved", signal_name, step
            )
            return
        if not self.step_already_saved(trainer):
            self.save_last_now(trainer)
        if trainer.is_global_zero and self.last_model_path:
            log.info(
                "interrupted by %s at step %d: saved %s; resume with ckpt_path=last",
                signal_name,
                self.last_saved_step,
                self.last_model_path,
            )
        elif trainer.is_global_zero:
            log.info("interrupted by %s at step %d: no training step to save", signal_name, step)
