"""Numerical faults: an optimizer step whose loss or gradient is not finite is skipped, and a run that
keeps producing them stops with one line instead of training a NaN model.

:class:`SVIModule` asks :class:`NonFiniteGuard` once per optimizer step, after the backward pass. A
skipped step leaves the weights and the optimizer's state as they were (every gradient is dropped, so
the optimizer has nothing to update); it still counts as a step, and ``train/skipped_steps`` counts it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch

from airlab.compat.torch_internals import tensor_norms
from airlab.errors import AirlabError

log = logging.getLogger(__name__)


class NonFiniteError(AirlabError):
    """Too many non-finite steps in a row: the run stops, naming the step and the last finite loss."""


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one fused norm per tensor, one sync)."""
    if not tensors:
        return True
    norms = tensor_norms(tensors)  # a nan or inf element makes its tensor's norm non-finite
    return bool(torch.isfinite(torch.stack(norms)).all())


class NonFiniteGuard:
    """Counts skipped steps and stops the run after ``max_consecutive_bad`` of them in a row."""

    def __init__(self, max_consecutive_bad: int) -> None:
        self.max_consecutive_bad = max_consecutive_bad
        self.skipped = 0
        self.consecutive = 0
        self.last_finite_loss: float | None = None
        self.last_finite_step: int | None = None
        self._warned = False

    def record_loss(self, loss: float, step: int) -> None:
        """Remember the latest finite training loss (per image) for the stop message."""
        if math.isfinite(loss):
            self.last_finite_loss, self.last_finite_step = loss, step

    def should_skip(self, bad: bool, step: int) -> bool:
        """Account for the step that is about to be taken; True means drop its gradients. Warns at the
        first skipped step; raises :class:`NonFiniteError` at the ``max_consecutive_bad``-th in a row."""
        if not bad:
            self.consecutive = 0
            return False
        self.skipped += 1
        self.consecutive += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "step %d: non-finite loss or gradient, step skipped (weights and optimizer state kept); "
                "train/skipped_steps counts these, warned once",
                step,
            )
        if self.consecutive >= self.max_consecutive_bad:
            last = (
                f"{self.last_finite_loss:.6g} nats per image at step {self.last_finite_step}"
                if self.last_finite_loss is not None
                else "none (no step had a finite loss)"
            )
            raise NonFiniteError(
                f"training stopped at step {step}: {self.consecutive} steps in a row had a non-finite "
                f"loss or gradient (max_consecutive_bad={self.max_consecutive_bad}); the last finite "
                f"loss was {last}; lower optim.lr, set trainer.gradient_clip_val, or resume from an "
                "earlier checkpoint"
            )
        return True

    def screen_step(
        self,
        optimizer: torch.optim.Optimizer,
        losses_finite: bool,
        step: int,
        agree: Callable[[bool], bool] | None = None,
    ) -> None:
        """Before ``optimizer`` steps: when a loss since the last step (``losses_finite`` false) or any
        gradient is not finite, drop every gradient, so that the optimizer leaves weights and state alone.
        ``agree`` makes the ranks of a DDP run decide together: one rank's fault skips the step everywhere."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        bad = not losses_finite or not all_finite(grads)
        if agree is not None:
            bad = agree(bad)
        if self.should_skip(bad, step):
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None

    def state_dict(self) -> dict[str, float | int | None]:
        """The counters, for checkpoints (a resumed run keeps counting)."""
        return {
            "skipped": self.skipped,
            "consecutive": self.consecutive,
            "last_finite_loss": self.last_finite_loss,
            "last_finite_step": self.last_finite_step,
        }

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        """Restore the counters saved by :meth:`state_dict`."""
        self.skipped = int(state.get("skipped", 0) or 0)
        self.consecutive = int(state.get("consecutive", 0) or 0)
        self.last_finite_loss = state.get("last_finite_loss")
        self.last_finite_step = state.get("last_finite_step")
