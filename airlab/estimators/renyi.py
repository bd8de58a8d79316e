"""``renyi`` and ``iwae``: the Renyi bound and the importance-weighted bound, per datum."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Annotated, Any

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import Trace_ELBO
from pyro.infer.util import MultiFrameTensor, get_plate_stacks
from pyro.poutine.trace_struct import Trace

from airlab.compat.pyro_internals import elbo_traces
from airlab.contracts.estimator import (
    DATA_PLATE,
    PARTICLE_PLATE,
    Estimator,
    LossOutput,
    Particles,
    PlateNesting,
)
from airlab.contracts.options import Excluded, Range
from airlab.errors import ConfigError
from airlab.estimators.surrogates import _sum, sample_sites


class RenyiEstimator(Estimator):
    """The Renyi bound per datum: ``1/(1-alpha) * log mean_k w_k^(1-alpha)``; alpha=0 is the IWAE bound.

    Unlike Pyro's ``RenyiELBO``, which multiplies the weights of a whole minibatch together, the
    bound here is computed for each image of the ``data`` plate and then summed, as in the IWAE paper.
    A non-reparameterised site's score is weighted by the (detached) bound of its datum.
    """

    name = "renyi"
    refuses_learned_baselines = True  # the bound uses no baselines

    def __init__(
        self,
        alpha: Annotated[
            float, Range(ge=0), Excluded(1.0, "is the ELBO itself; use elbo=trace, or alpha != 1")
        ] = 0.5,
        num_particles: Particles = 2,
        vectorize_particles: bool = False,
        max_plate_nesting: PlateNesting = None,
    ) -> None:
        if alpha == 1:
            raise ConfigError("elbo.alpha", "alpha=1 is the ELBO itself; use elbo=trace, or alpha != 1")
        super().__init__(num_particles, vectorize_particles, max_plate_nesting)
        self.alpha = alpha
        self._traces = Trace_ELBO(**self._pyro_elbo_kwargs())

    @staticmethod
    def _per_datum(model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """log w, and each non-reparameterised site's score function, summed to [particle,] data plates."""
        stacks = get_plate_stacks(model_trace)
        keep = {
            f
            for name, _ in sample_sites(model_trace)
            for f in stacks[name]
            if f.name in (DATA_PLATE, PARTICLE_PLATE)
        }
        log_weight = MultiFrameTensor()
        for name, site in sample_sites(model_trace):
            log_weight.add((stacks[name], site["log_prob"]))
        scores = {}
        for name, site in sample_sites(guide_trace):
            log_weight.add((stacks[name], -site["log_prob"]))
            score_function = site["score_parts"].score_function
            if not is_identically_zero(score_function):
                scores[name] = MultiFrameTensor((stacks[name], score_function)).sum_to(keep)
        log_w = torch.as_tensor(log_weight.sum_to(keep))
        return log_w, {name: torch.as_tensor(s).expand_as(log_w) for name, s in scores.items()}

    def particles(
        self, model: Callable, guide: Callable, args: tuple[Any, ...]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Trace | None]:
        """``log w`` ``[K, B]`` of the K particles for each datum, each non-reparameterised site's score
        function ``[K, B]``, and the last guide trace."""
        log_ws, scores = [], defaultdict(list)
        guide_trace = None
        for model_trace, guide_trace in elbo_traces(self._traces, model, guide, args):
            log_w, site_scores = self._per_datum(model_trace, guide_trace)
            if not self.vectorize_particles or self.num_particles == 1:
                log_w = log_w.unsqueeze(0)
                site_scores = {name: s.unsqueeze(0) for name, s in site_scores.items()}
            log_ws.append(log_w.reshape(log_w.shape[0], -1))
            for name, s in site_scores.items():
                scores[name].append(s.reshape(s.shape[0], -1))
        return torch.cat(log_ws), {name: torch.cat(parts) for name, parts in scores.items()}, guide_trace

    def __call__(self, model: Callable, guide: Callable, *args: Any, scale: float = 1.0) -> LossOutput:
        """Negative Rényi bound summed over the batch; ``log_w`` is ``[K, B]`` and the surrogate adds each
        non-reparameterised site's score weighted by its datum's (detached) bound."""
        log_w, scores, guide_trace = self.particles(model, guide, args)
        one_minus_alpha = 1.0 - self.alpha
        bound = (torch.logsumexp(one_minus_alpha * log_w, 0) - math.log(len(log_w))) / one_minus_alpha
        # The score of every particle's discrete draws is weighted by its datum's bound.
        score_terms = {name: (score * bound.detach()).sum() * scale for name, score in scores.items()}
        surrogate = -(bound.sum() * scale + _sum(score_terms.values()))
        return LossOutput(-bound.sum().detach() * scale, surrogate, None, score_terms, guide_trace)


class IWAEEstimator(RenyiEstimator):
    """The importance-weighted bound (Burda et al. 2016) with ``num_particles`` = K samples."""

    name = "iwae"
    reports_bound = "iwae"

    def __init__(
        self,
        num_particles: Particles = 5,
        vectorize_particles: bool = False,
        max_plate_nesting: PlateNesting = None,
    ) -> None:
        super().__init__(0.0, num_particles, vectorize_particles, max_plate_nesting)
