"""The eager estimators ``trace``, ``tracegraph`` and ``meanfield``, their particle-averaging base, and
a gradient-free single-sample ELBO. The ``Estimator`` base class is :mod:`airlab.contracts.estimator`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.poutine.trace_struct import Trace

from airlab.compat.pyro_internals import elbo_traces
from airlab.contracts.estimator import Estimator, LossOutput
from airlab.contracts.options import OneOf
from airlab.errors import ConfigError
from airlab.estimators.surrogates import (
    ParticleParts,
    _particle_parts_declared,
    _particle_parts_trace,
    _particle_parts_tracegraph,
    _sum,
)

if TYPE_CHECKING:  # only a type hint: the estimators need nothing from the models at run time
    from airlab.contracts.model import GenerativeModel

#: Where ``tracegraph`` learns which costs lie downstream of each discrete site.
DEPENDENCIES = ("declared", "provenance")


class _ParticleEstimator(Estimator):
    """Estimators built from per-particle parts of (model trace, guide trace)."""

    trace_source = Trace_ELBO

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._traces = self.trace_source(**self._pyro_elbo_kwargs())

    def _trace_source(self) -> ELBO:
        """The Pyro ELBO whose ``_get_traces`` runs guide and model (it decides what gets tracked)."""
        return self._traces

    def _particle_parts(self, model_trace: Trace, guide_trace: Trace) -> ParticleParts:
        return _particle_parts_trace(model_trace, guide_trace)

    def __call__(self, model: Callable, guide: Callable, *args: Any, scale: float = 1.0) -> LossOutput:
        if scale != 1.0:
            model, guide = poutine.scale(model, scale), poutine.scale(guide, scale)
        elbo, surrogate_elbo, baseline_loss = 0.0, 0.0, None
        score_terms: dict[str, torch.Tensor] = {}
        guide_trace = None
        for model_trace, guide_trace in elbo_traces(self._trace_source(), model, guide, args):
            p_elbo, p_surrogate, p_scores, p_baseline = self._particle_parts(model_trace, guide_trace)
            elbo = elbo + p_elbo / self.num_particles
            surrogate_elbo = surrogate_elbo + p_surrogate / self.num_particles
            for name, term in p_scores.items():
                score_terms[name] = score_terms.get(name, 0.0) + term / self.num_particles
            if p_baseline is not None:
                baseline_loss = (baseline_loss or 0.0) + p_baseline / self.num_particles
        surrogate = -(surrogate_elbo + _sum(score_terms.values()))
        if baseline_loss is not None:
            surrogate = surrogate + baseline_loss
        loss = -torch.as_tensor(elbo).detach()
        return LossOutput(loss, surrogate, baseline_loss, score_terms, guide_trace)


class TraceEstimator(_ParticleEstimator):
    """``Trace_ELBO``: pathwise gradients, plus score terms weighted by the whole (detached) log-ratio."""

    name = "trace"


class TraceGraphEstimator(_ParticleEstimator):
    """``TraceGraph_ELBO``. ``dependencies="declared"`` takes the downstream costs from the model's
    ``score_dependencies()`` (no provenance tracking at run time) when the model declares them;
    ``"provenance"`` always tracks them as Pyro does. Both give the same gradient."""

    name = "tracegraph"
    uses_baselines = True
    trace_source = TraceGraph_ELBO  # its traces track provenance of non-reparameterised values

    def __init__(
        self, *args: Any, dependencies: Annotated[str, OneOf(DEPENDENCIES)] = "declared", **kwargs: Any
    ) -> None:
        if dependencies not in DEPENDENCIES:
            raise ConfigError(
                "elbo.dependencies", f"{dependencies!r} is not one of {', '.join(DEPENDENCIES)}"
            )
        super().__init__(*args, **kwargs)
        self.dependencies = dependencies
        self.declared: dict[str, list[str]] | None = None
        self._untracked = Trace_ELBO(**self._pyro_elbo_kwargs())

    def bind(self, model: GenerativeModel) -> None:
        """Check the model, then take its declared score dependencies when ``dependencies="declared"``."""
        super().bind(model)
        declared = model.score_dependencies() if self.dependencies == "declared" else None
        self.declared = None if declared is None else {k: list(v) for k, v in declared.items()}

    def _trace_source(self) -> ELBO:
        return self._traces if self.declared is None else self._untracked

    def _particle_parts(self, model_trace: Trace, guide_trace: Trace) -> ParticleParts:
        if self.declared is None:
            return _particle_parts_tracegraph(model_trace, guide_trace)
        return _particle_parts_declared(model_trace, guide_trace, self.declared)


class MeanFieldEstimator(Estimator):
    """``TraceMeanField_ELBO``: analytic KL terms where available; needs a fully reparameterised guide."""

    name = "meanfield"
    requires_reparameterized = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._elbo = TraceMeanField_ELBO(**self._pyro_elbo_kwargs())

    def __call__(self, model: Callable, guide: Callable, *args: Any, scale: float = 1.0) -> LossOutput:
        """Negative ELBO with analytic KLs; the surrogate is that loss itself (all gradients are pathwise)."""
        if scale != 1.0:
            model, guide = poutine.scale(model, scale), poutine.scale(guide, scale)
        surrogate = self._elbo.differentiable_loss(model, guide, *args)
        return LossOutput(surrogate.detach(), surrogate)


@torch.no_grad()
def elbo_estimate(model: Callable, guide: Callable, *args: Any) -> torch.Tensor:
    """A single-sample ELBO for a batch (summed over it), without gradients."""
    guide_trace = poutine.trace(guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    return model_trace.log_prob_sum() - guide_trace.log_prob_sum()
