"""Log the gradient variance of the training estimator every N steps (see docs/variance.md)."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import pytorch_lightning as pl

from airlab.contracts.options import Range
from airlab.variance.estimate import gradient_variance

log = logging.getLogger(__name__)


class GradVarianceMonitor(pl.Callback):
    """K extra gradient estimates on the current batch at global steps N, 2N, ... (N = ``every_n_steps``).

    Logs ``grad_var/<group>``, ``grad_snr/<group>``, ``grad_mean_sq_norm/<group>`` and
    ``grad_var_term/<site>`` at the global step. ``every_n_steps=0`` turns it off: the hook then returns
    before doing anything. The measurement changes nothing that training sees (weights, ``.grad``,
    optimizer state, Pyro's baselines, the RNG streams); see ``airlab.variance``.

    It runs in ``on_train_batch_start``: that hook receives the batch already on the device, and the
    weights are exactly those the training step is about to differentiate. ``on_train_batch_end`` would
    see the weights after the optimizer step, and ``on_before_optimizer_step`` gets no batch.
    """

    def __init__(
        self,
        every_n_steps: Annotated[int, Range(ge=0)] = 500,
        num_samples: Annotated[int, Range(ge=2)] = 16,
        terms: bool = True,
        seed: Annotated[int, Range(ge=0, le=2**32 - 1)] = 0,
    ) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        if every_n_steps > 0 and num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 to estimate a variance, got {num_samples}")
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.terms = terms
        self.seed = seed
        self.last_seconds: float | None = None
        self._last_step = -1

    def draw_seed(self, step: int) -> int:
        """The draws at ``step`` are reproducible, and differ from step to step."""
        return (self.seed * 1_000_003 + step) % 2**32

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Measure and log at steps N, 2N, ... (rank zero, once per step, once the estimator is compiled)."""
        if self.every_n_steps <= 0:
            return
        step = trainer.global_step
        # Steps N, 2N, ...: not step 0, so that short runs (smoke tests, benchmarks) pay nothing. With
        # gradient accumulation several batches share one global step: measure the first.
        if step == 0 or step % self.every_n_steps or step == self._last_step or not trainer.is_global_zero:
            return
        estimator = pl_module.estimator
        if estimator.compiled and not estimator.num_compilations:
            # The first call compiles, and compiling draws random numbers of its own: leave it to the
            # training step, so that the run is the same with and without the monitor.
            log.info("gradient variance: step %d skipped, %s is not compiled yet", step, estimator.name)
            return
        self._last_step = step
        metrics = self.measure(pl_module, pl_module.model.batch_inputs(batch), step)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        log.debug("gradient variance at step %d (%.2f s): %s", step, self.last_seconds, metrics)

    def measure(self, pl_module: pl.LightningModule, inputs: tuple[Any, ...], step: int) -> dict[str, float]:
        """One measurement on the batch's model ``inputs`` at ``step``: the scalars to log. Its time is
        ``last_seconds``."""
        started = time.perf_counter()
        model = pl_module.model
        # training_step makes the same call right after this hook, so the prior it anneals is the one
        # the training gradient sees; the value it sets is the one training would set anyway.
        model.on_train_step(step)
        result = gradient_variance(
            pl_module.estimator,
            pl_module.model_fn,
            pl_module.guide_fn,
            inputs,
            model.parameter_groups(),
            num_samples=self.num_samples,
            seed=self.draw_seed(step),
            scale=pl_module.loss_scale(inputs[0].shape[0]),
            terms=self.terms,
            module=model,
        )
        self.last_seconds = time.perf_counter() - started
        return result.scalars()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Reset the last measured step and log the monitor's cost when it is on."""
        self._last_step = -1
        if self.every_n_steps:
            log.info(
                "gradient variance: %d extra gradient estimates every %d steps (callbacks.grad_variance)",
                self.num_samples,
                self.every_n_steps,
            )
