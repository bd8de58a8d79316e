"""Progress for logs: plain lines when the output is no terminal, the rich bar when it is one.

Under Slurm, nohup or a redirected shell, a live progress bar writes nothing a log can keep. There
:class:`PlainProgress` logs a line every ``every_n_steps`` training steps (step, loss, ELBO, steps/s and
the time left) and one per validation, and :class:`TerminalProgressBar` (Lightning's RichProgressBar)
switches itself off. On a terminal it is the other way round. ``when`` overrides the choice.
"""

from __future__ import annotations

import datetime
import logging
import math
import sys
import time
from typing import Annotated, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar, Timer

from airlab.contracts.options import OneOf, Range

log = logging.getLogger(__name__)


def output_is_terminal() -> bool:
    """Whether stdout is an interactive terminal (not a file, a pipe or a scheduler's log)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``1:02:05``; ``?`` for an unknown or infinite time."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(datetime.timedelta(seconds=round(seconds)))


def _scalar(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


class PlainProgress(pl.Callback):
    """Logs ``step 150/2000 (epoch 3) | loss 103.21 | elbo -103.21 | 4.12 steps/s | ETA 0:07:31`` every
    ``every_n_steps`` steps and ``validation at step 150: val/elbo -101.70`` after each validation, from
    rank zero. ``when``: ``auto`` (only when stdout is no terminal), ``always`` or ``never``. The loss is
    the last step's ``train/loss`` (nats per image); the ELBO is the mean of minus ``train/loss`` over
    the steps since the last line. The ETA is for ``trainer.max_steps`` (or ``max_epochs``) at the rate
    since the last line."""

    def __init__(
        self,
        every_n_steps: Annotated[int, Range(ge=1)] = 50,
        when: Annotated[str, OneOf(("auto", "always", "never"))] = "auto",
    ) -> None:
        self.every_n_steps = every_n_steps
        self.when = when
        self._last_time: float | None = None
        self._last_step = 0
        self._losses: list[float] = []

    @property
    def active(self) -> bool:
        """Whether lines are written (``when``, and whether stdout is a terminal for ``auto``)."""
        return self.when == "always" or (self.when == "auto" and not output_is_terminal())

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock; say how many steps the fit will run."""
        self._last_time, self._last_step = time.perf_counter(), trainer.global_step
        if self.active and trainer.is_global_zero:
            total = self._total_steps(trainer)
            log.info("training from step %d to %s", trainer.global_step, total if total else "?")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Every ``every_n_steps`` steps: one line of progress."""
        if not self.active or not trainer.is_global_zero:
            return
        loss = _scalar(trainer.callback_metrics, "train/loss")
        if loss is not None:
            self._losses.append(loss)
        if trainer.global_step % self.every_n_steps == 0:
            log.info(self.progress_line(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After each validation (not the sanity check): the validation metrics."""
        if trainer.sanity_checking or not self.active or not trainer.is_global_zero:
            return
        # The validation metrics the progress bar shows: the ELBO, the trained bound, the model's headline.
        metrics = trainer.progress_bar_metrics
        parts = [f"{key} {float(value):.4g}" for key, value in metrics.items() if key.startswith("val/")]
        if parts:
            log.info("validation at step %d: %s", trainer.global_step, ", ".join(parts))

    def progress_line(self, trainer: pl.Trainer) -> str:
        """The line for the current step (and restart the rate's clock and the ELBO's mean)."""
        now, step = time.perf_counter(), trainer.global_step
        rate = (step - self._last_step) / max(now - (self._last_time or now), 1e-9)
        self._last_time, self._last_step = now, step
        total = self._total_steps(trainer)
        metrics = trainer.callback_metrics
        loss = _scalar(metrics, "train/loss")
        elbo = -sum(self._losses) / len(self._losses) if self._losses else None
        self._losses = []
        parts = [f"step {step}/{total or '?'} (epoch {trainer.current_epoch})"]
        if loss is not None:
            parts.append(f"loss {loss:.2f}")
        if elbo is not None:
            parts.append(f"elbo {elbo:.2f}")
        parts.append(f"{rate:.2f} steps/s")
        eta = (total - step) / rate if total and rate > 0 else math.inf
        # trainer.max_time may end the fit first (Lightning's Timer callback keeps that clock).
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        remaining = timer.time_remaining("train") if timer is not None else None
        if remaining is not None:
            eta = min(eta, max(remaining, 0.0))
        parts.append(f"ETA {format_duration(eta)}")
        return " | ".join(parts)

    @staticmethod
    def _total_steps(trainer: pl.Trainer) -> int | None:
        """The step the fit stops at (``max_steps``, or the epochs' batches), or None when unbounded."""
        if trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        try:
            total = trainer.estimated_stepping_batches
        except Exception:  # no loader yet, or an iterable without a length
            return None
        return int(total) if math.isfinite(total) else None


class TerminalProgressBar(RichProgressBar):
    """Lightning's RichProgressBar (same keys), off when stdout is no terminal: a live bar written to a
    file or a pipe is noise, and :class:`PlainProgress` writes the log's lines instead."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Disable the bar when stdout is no terminal."""
        if not output_is_terminal():
            self.disable()
        super().setup(trainer, pl_module, stage)
