"""Training speed: ``throughput/*`` over the optimizer steps of the fit."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl


class ThroughputMonitor(pl.Callback):
    """Steps per second of wall time spent in training batches (validation excluded), and the time
    since training began at each validation (``throughput/elapsed_s``).

    ``throughput/steps_per_s`` is logged every ``log_every_n_steps`` steps. At the end of every training
    epoch it logs, through the module (so they reach ``trainer.callback_metrics`` and metrics.json):
    ``throughput/mean_steps_per_s`` over all training batches so far, ``throughput/train_time_s`` (their
    wall time) and ``throughput/loop_time_s``, the wall time since the first training step's set-up
    (``on_train_start``), validation and checkpoints included, Trainer set-up and teardown excluded.

    ``throughput/elapsed_s`` goes on across a resume: checkpoints keep the time trained before (a float,
    so they still load with ``weights_only=True``). The other totals count this fit only.
    """

    def __init__(self, log_every_n_steps: int = 50) -> None:
        self.log_every_n_steps = log_every_n_steps
        self.train_time_s = 0.0
        self.steps = 0
        self._window_time_s = 0.0
        self._window_steps = 0
        self._batch_start: float | None = None
        self._loop_start: float | None = None
        self._elapsed_before_s = 0.0  # training time of the fits this one resumes
        self.loop_time_s: float | None = None

    def state_dict(self) -> dict[str, float]:
        """What a checkpoint keeps: the wall time since training began, resumed fits included."""
        return {"elapsed_s": self.elapsed_s or self._elapsed_before_s}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Go on from the checkpoint's ``elapsed_s``."""
        self._elapsed_before_s = float(state_dict.get("elapsed_s", 0.0))

    @property
    def elapsed_s(self) -> float | None:
        """Wall time since training began (validation included; resumed fits added), None before it."""
        if self._loop_start is None:
            return None
        return self._elapsed_before_s + time.perf_counter() - self._loop_start

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the ``loop_time_s`` clock."""
        self._loop_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the fit's throughput so far: mean steps/s, time in training batches, loop time."""
        if self._loop_start is None:
            return
        self.loop_time_s = time.perf_counter() - self._loop_start
        totals = {"throughput/loop_time_s": self.loop_time_s, "throughput/train_time_s": self.train_time_s}
        if self.overall_steps_per_s is not None:
            totals["throughput/mean_steps_per_s"] = self.overall_steps_per_s
        for name, value in totals.items():
            pl_module.log(name, value, on_step=False, on_epoch=True, rank_zero_only=True)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``throughput/elapsed_s`` at every validation: wall time since training began (validation
        included), the x axis of accuracy-against-time curves."""
        elapsed = self.elapsed_s
        if elapsed is None or trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            logger.log_metrics({"throughput/elapsed_s": elapsed}, step=trainer.global_step)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start timing this training batch."""
        self._batch_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Add the batch time to the totals; log ``throughput/steps_per_s`` every ``log_every_n_steps``."""
        if self._batch_start is None:
            return
        elapsed = time.perf_counter() - self._batch_start
        self.train_time_s += elapsed
        self.steps += 1
        self._window_time_s += elapsed
        self._window_steps += 1
        if self._window_steps >= self.log_every_n_steps:
            rate = self._window_steps / max(self._window_time_s, 1e-9)
            for logger in trainer.loggers:
                logger.log_metrics({"throughput/steps_per_s": rate}, step=trainer.global_step)
            self._window_time_s, self._window_steps = 0.0, 0

    @property
    def overall_steps_per_s(self) -> float | None:
        """Steps per second over all training batches of the fit, or None before the first."""
        return self.steps / self.train_time_s if self.train_time_s > 0 else None
