"""``vimco``: the importance-weighted bound with VIMCO's per-particle learning signals (Mnih & Rezende
2016), the multi-sample estimator built for discrete latents. Pyro has none.

For each datum, with K particles and ``L = log mean_k w_k``, particle k's discrete draws are weighted
by ``L - L_{-k}``: the bound minus the bound with ``w_k`` replaced by the geometric mean of the other
weights. ``L_{-k}`` does not depend on particle k's draws, so it is a baseline that keeps the gradient
unbiased, and it needs no learned network. The reparameterised and parameter paths are differentiated
through ``L`` itself, as in the IWAE bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import torch

from airlab.contracts.estimator import LossOutput, PlateNesting
from airlab.contracts.options import Range
from airlab.estimators.renyi import RenyiEstimator
from airlab.estimators.surrogates import _sum


def leave_one_out_bounds(log_w: torch.Tensor) -> torch.Tensor:
    """``L_{-k}`` ``[K, B]``: ``log mean_j w_j`` with ``w_k`` replaced by the geometric mean of the others."""
    num = log_w.shape[0]
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (num - 1)  # [K, B]: log of the geometric mean
    # Row k of [K, K, B]: every particle's log w, except particle k's, which is others_mean[k].
    replaced = log_w.unsqueeze(0).expand(num, -1, -1).clone()
    index = torch.arange(num)
    replaced[index, index] = others_mean
    return torch.logsumexp(replaced, 1) - math.log(num)


class VIMCOEstimator(RenyiEstimator):
    """The IWAE bound with ``num_particles`` = K >= 2, and a leave-one-out baseline per particle."""

    name = "vimco"
    reports_bound = "iwae"

    def __init__(
        self,
        num_particles: Annotated[int, Range(ge=2)] = 5,
        vectorize_particles: bool = False,
        max_plate_nesting: PlateNesting = None,
    ) -> None:
        super().__init__(0.0, num_particles, vectorize_particles, max_plate_nesting)

    def __call__(self, model: Callable, guide: Callable, *args: Any, scale: float = 1.0) -> LossOutput:
        """Negative IWAE bound summed over the batch; each site's score of particle k is weighted by its
        datum's (detached) learning signal ``L - L_{-k}``."""
        log_w, scores, guide_trace = self.particles(model, guide, args)  # [K, B]
        bound = torch.logsumexp(log_w, 0) - math.log(len(log_w))  # [B]
        signal = (bound.unsqueeze(0) - leave_one_out_bounds(log_w)).detach()  # [K, B]
        score_terms = {name: (score * signal).sum() * scale for name, score in scores.items()}
        surrogate = -(bound.sum() * scale + _sum(score_terms.values()))
        return LossOutput(-bound.sum().detach() * scale, surrogate, None, score_terms, guide_trace)
