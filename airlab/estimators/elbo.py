"""The eager estimators ``trace``, ``tracegraph`` and ``meanfield``, their common base class and a
gradient-free single-sample ELBO."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.poutine.trace_struct import Trace

from airlab.config.combinations import check_estimator_fits_model
from airlab.config.options import OneOf, Range
from airlab.errors import ConfigError
from airlab.estimators.surrogates import (
    LossOutput,
    ParticleParts,
    _particle_parts_declared,
    _particle_parts_trace,
    _particle_parts_tracegraph,
    _sum,
)

if TYPE_CHECKING:  # only a type hint: the estimators need nothing from the models at run time
    from airlab.models.base import GenerativeModel

#: Where ``tracegraph`` learns which costs lie downstream of each discrete site.
DEPENDENCIES = ("declared", "provenance")
#: The particle options every estimator takes, with their rules.
Particles = Annotated[int, Range(ge=1)]
PlateNesting = Annotated[int | None, Range(ge=0)]


class Estimator:
    """Base class: runs guide and model, and builds the surrogate loss."""

    name = "estimator"
    #: The estimator needs every guide site to have ``rsample``.
    requires_reparameterized = False
    #: The estimator uses the guide's ``infer={"baseline": ...}`` options.
    uses_baselines = False
    #: The estimator is compiled with ``torch.jit.trace``.
    compiled = False
    #: Graphs compiled so far (compiled estimators count theirs; an eager one compiles none).
    num_compilations = 0
    #: The estimator can update Pyro's decaying-average baseline (its running mean lives in the param store).
    supports_decaying_avg_baseline = True
    #: The bound gives a learned baseline network (NVIL) no loss, so that network would be trained but
    #: unused (and DDP fails on unused parameters): a model option that builds one is refused.
    refuses_learned_baselines = False
    #: The estimator sums the model's declared discrete configurations
    #: (``GenerativeModel.discrete_configurations``) instead of sampling them.
    requires_discrete_configurations = False
    #: A bound other than the ELBO that this estimator trains (e.g. ``"iwae"``): validation and test
    #: then also log ``<stage>/<reports_bound>`` with the estimator's own particles.
    reports_bound: str | None = None

    def __init__(
        self,
        num_particles: Particles = 1,
        vectorize_particles: bool = False,
        max_plate_nesting: PlateNesting = None,
    ) -> None:
        self.num_particles = num_particles
        self.vectorize_particles = vectorize_particles
        self.max_plate_nesting = math.inf if max_plate_nesting is None else max_plate_nesting

    def _pyro_elbo_kwargs(self) -> dict:
        return dict(
            num_particles=self.num_particles,
            vectorize_particles=self.vectorize_particles,
            max_plate_nesting=self.max_plate_nesting,
        )

    def check_model(self, model: GenerativeModel) -> None:
        """Refuse, with one line, a model this estimator cannot train (the validator applies the same
        rules to the config, before anything is built)."""
        learned = any(True for _ in model.baseline_parameters())
        kind = "decaying_avg" if model.uses_decaying_avg_baseline() else "learned" if learned else "none"
        check_estimator_fits_model(
            self, type(model), vectorize_particles=self.vectorize_particles, baseline_kind=kind
        )

    def bind(self, model: GenerativeModel) -> None:
        """Check that this estimator can train ``model``, and read what the model declares about itself."""
        self.check_model(model)

    def __call__(self, model: Callable, guide: Callable, *args: Any, scale: float = 1.0) -> LossOutput:
        """Estimate for one batch: ``loss`` is the negative bound (detached); ``surrogate``'s gradient is
        the estimator's gradient. ``scale`` is the dataset scale ``N/B`` (see ``SVIModule.loss_scale``)."""
        raise NotImplementedError


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
        for model_trace, guide_trace in self._trace_source()._get_traces(model, guide, args, {}):
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
