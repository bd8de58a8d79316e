"""Pyro SVI inside a LightningModule.

The estimator returns a surrogate loss tensor, and ``training_step`` returns it: Lightning then runs
the backward pass (synchronised across DDP ranks), gradient clipping, the optimizer step and the
``global_step`` count, exactly as for any other module. Learnable parameters live in the model's
``nn.Module`` tree, so checkpoints and optimizers see them. Pyro's param store only holds estimator
state (decaying-average baselines), which is saved alongside.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any

import pyro
import torch

from airlab.contracts.estimator import Estimator
from airlab.contracts.model import GenerativeModel
from airlab.contracts.options import Range
from airlab.estimators import elbo_estimate
from airlab.estimators.baselines import rank_and_world, synchronise_averages
from airlab.estimators.nonfinite import NonFiniteGuard
from airlab.resume.training_state import CheckpointedTraining, TrainingState
from airlab.training.optimization import PerGroupOptimization


class SVIModule(CheckpointedTraining, PerGroupOptimization):
    """A generative model and its gradient estimator; Lightning runs the optimisation loop. The optimizer
    hooks (parameter groups, per-group clipping, skipping non-finite steps) are
    :class:`~airlab.training.optimization.PerGroupOptimization`'s, the checkpoint hooks
    :class:`~airlab.resume.training_state.CheckpointedTraining`'s."""

    def __init__(
        self,
        model: GenerativeModel,
        estimator: Estimator,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None = None,
        baseline_lr: Annotated[float | None, Range(gt=0)] = None,
        num_train: int | None = None,
        config: dict[str, Any] | None = None,
        max_consecutive_bad: Annotated[int, Range(ge=1)] = 10,
        validate_args_steps: Annotated[int, Range(ge=-1)] = 100,
    ) -> None:
        super().__init__()
        self.model = model
        self.estimator = estimator
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.baseline_lr = baseline_lr
        self.num_train = num_train
        self.config = config or {}
        # Bound methods are new objects on every attribute access; compiled estimators key their
        # cache on the callable's identity, so keep one of each.
        self.model_fn = model.model
        self.guide_fn = model.guide
        self.nonfinite = NonFiniteGuard(max_consecutive_bad)
        self.resume_state = TrainingState(self.nonfinite)  # what checkpoints hold beyond Lightning's
        self.losses_finite = True  # every training_step since the last optimizer step
        self.validate_args_steps = validate_args_steps

    # -- the SVI step ---------------------------------------------------------------------------
    def loss_scale(self, batch_size: int) -> float:
        """N/B when the model's data plate stands for the whole training set, else 1."""
        if self.model.scale_to_dataset and self.num_train:
            return self.num_train / batch_size
        return 1.0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One SVI step on the model's declared inputs: log ``train/loss`` and ``train/elbo`` per item;
        return the surrogate.

        Under DDP, W ranks of B images each make the step one process makes on their W*B images: the
        estimator scales to the global batch (N/(W*B)), so costs and baselines are the one process's,
        and the surrogate is multiplied by W, so that DDP's mean of the ranks' gradients is their sum.
        ``train/loss`` (per step) is this rank's; ``train/elbo`` (per epoch) is reduced across ranks.
        """
        self.model.on_train_step(self.global_step)
        inputs = self.model.batch_inputs(batch)
        batch_size = inputs[0].shape[0]
        world = rank_and_world()[1]  # DDP's ranks
        scale = self.loss_scale(batch_size * world)
        with self.distribution_checks():
            out = self.estimator(self.model_fn, self.guide_fn, *inputs, scale=scale)
        synchronise_averages()  # a collective (under DDP): before any rank can return early
        surrogate = out.surrogate * world if world > 1 else out.surrogate
        loss_per_image = out.loss / (scale * batch_size)
        value = float(loss_per_image)
        if not math.isfinite(value):
            # Logged nowhere (it would poison the epoch means); on_before_optimizer_step skips the step.
            self.losses_finite = False
            return surrogate
        self.nonfinite.record_loss(value, self.global_step)
        self.log("train/loss", loss_per_image, prog_bar=True, batch_size=batch_size)
        self.log(
            "train/elbo", -loss_per_image, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True
        )
        if out.baseline_loss is not None:
            self.log("train/baseline_loss", out.baseline_loss / batch_size, batch_size=batch_size)
        if out.guide_trace is not None:
            for name, value in self.model.training_metrics(out.guide_trace).items():
                self.log(f"train/{name}", value, batch_size=batch_size)
        return surrogate

    def distribution_checks(self) -> AbstractContextManager:
        """Pyro's validation (distribution arguments, supports, nan checks) as Pyro sets it for the first
        ``validate_args_steps`` training steps of a run (-1: every step), then off: a model that passes
        them passes them later too, and on AIR they cost 15% of a step (docs/benchmarks.md).
        Validation and test always run with Pyro's setting."""
        if self.validate_args_steps < 0 or self.global_step < self.validate_args_steps:
            return nullcontext()
        return pyro.validation_enabled(False)

    def _evaluation_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        inputs = self.model.batch_inputs(batch)
        batch_size = inputs[0].shape[0]
        elbo = elbo_estimate(self.model_fn, self.guide_fn, *inputs) / batch_size
        # Epoch means over every rank's images (sync_dist), as one process would log them.
        self.log(f"{stage}/elbo", elbo, prog_bar=stage == "val", batch_size=batch_size, sync_dist=True)
        if self.estimator.reports_bound is not None:
            # The bound being trained, with its K particles, next to the ELBO.
            bound = -self.estimator(self.model_fn, self.guide_fn, *inputs).loss / batch_size
            bound_tag = f"{stage}/{self.estimator.reports_bound}"
            self.log(bound_tag, bound, prog_bar=stage == "val", batch_size=batch_size, sync_dist=True)
        with torch.no_grad():
            metrics, outputs = self.model.evaluate(batch)
        for name, value in metrics.items():
            headline = name in self.model.headline_metrics
            self.log(f"{stage}/{name}", value, prog_bar=headline, batch_size=batch_size, sync_dist=True)
        return outputs

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Log ``val/elbo``, the trained bound if reported, model metrics; return outputs for callbacks."""
        return self._evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Log ``test/elbo``, the trained bound if reported, model metrics; return outputs for callbacks."""
        return self._evaluation_step(batch, "test")
