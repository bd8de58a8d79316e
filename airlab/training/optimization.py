"""The optimizer's parameter groups and per-group gradient clipping.

The baselines' targets carry the dataset scale N/B, so their gradients are orders of magnitude larger
than the model's: they get a group (and a learning rate, ``optim.baseline_lr``) of their own, and a
clip applies to each group on its own, since one global norm would be theirs and would shrink the
model's gradient to nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from airlab.contracts.model import GenerativeModel
from airlab.estimators.nonfinite import NonFiniteGuard


def parameter_groups(model: GenerativeModel, baseline_lr: float | None) -> list[dict[str, Any]]:
    """``main`` (every parameter but the baselines'), and ``baseline`` (at ``baseline_lr`` when given)
    if the model has baseline parameters."""
    baseline = list(model.baseline_parameters())
    baseline_ids = {id(p) for p in baseline}
    main = [p for p in model.parameters() if id(p) not in baseline_ids]
    groups = [{"params": main, "name": "main"}]
    if baseline:
        group = {"params": baseline, "name": "baseline"}
        if baseline_lr is not None:
            group["lr"] = baseline_lr
        groups.append(group)
    return groups


def clip_each_group(optimizer: torch.optim.Optimizer, value: float | None, algorithm: str | None) -> None:
    """Clip the gradients of each parameter group on its own: to norm ``value`` (``algorithm``
    ``"norm"`` or None) or elementwise to ``±value`` (``"value"``); nothing when ``value`` is unset or 0."""
    if value is None or value <= 0:
        return
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        if algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, value)
        else:
            torch.nn.utils.clip_grad_norm_(params, value)


class PerGroupOptimization(pl.LightningModule):
    """The optimizer hooks of the SVI module: the optimizer from ``optim`` over :func:`parameter_groups`,
    ``trainer.gradient_clip_val`` per group, and a step skipped when its loss or a gradient is not finite
    (:class:`~airlab.estimators.nonfinite.NonFiniteGuard`). The module provides ``model``,
    ``optimizer_factory``, ``scheduler_factory``, ``baseline_lr``, ``nonfinite`` and ``losses_finite``."""

    model: GenerativeModel
    optimizer_factory: Callable[..., torch.optim.Optimizer]
    scheduler_factory: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None
    baseline_lr: float | None
    nonfinite: NonFiniteGuard
    losses_finite: bool

    def parameter_groups(self) -> list[dict[str, Any]]:
        """``main`` at ``optim.lr``; ``baseline`` (if any) at ``optim.baseline_lr``."""
        return parameter_groups(self.model, self.baseline_lr)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """A new optimizer from ``optim``, over :meth:`parameter_groups`."""
        return self.optimizer_factory(self.parameter_groups())

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """The optimizer from ``optim``; with a ``scheduler`` group, also its learning-rate schedule,
        stepped after every optimizer step (its milestones and periods count steps, not epochs). The
        schedule scales every group's rate alike: the baselines' keeps its ratio to the model's."""
        optimizer = self.make_optimizer()
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip the step when its loss or any gradient is not finite (all ranks agree): drop every
        gradient, so the optimizer leaves weights and state alone. Logs ``train/skipped_steps``."""
        strategy = self.trainer.strategy if self.trainer.world_size > 1 else None
        agree = (lambda bad: strategy.reduce_boolean_decision(bad, all=False)) if strategy else None
        self.nonfinite.screen_step(optimizer, self.losses_finite, self.global_step, agree)
        self.losses_finite = True
        self.log("train/skipped_steps", float(self.nonfinite.skipped), on_step=True, on_epoch=False)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """``trainer.gradient_clip_val`` applies to each parameter group (``main``, ``baseline``) alone."""
        clip_each_group(optimizer, gradient_clip_val, gradient_clip_algorithm)
