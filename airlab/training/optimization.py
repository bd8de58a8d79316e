"""The optimizer's parameter groups and per-group gradient clipping.

The baselines' targets carry the dataset scale N/B, so their gradients are orders of magnitude larger
than the model's: they get a group (and a learning rate, ``optim.baseline_lr``) of their own, and a
clip applies to each group on its own, since one global norm would be theirs and would shrink the
model's gradient to nothing.
"""

from __future__ import annotations

from typing import Any

import torch

from airlab.contracts.model import GenerativeModel


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
