"""ELBO estimators that hand the training loop a differentiable surrogate loss.

Pyro's ``TraceGraph_ELBO``, ``JitTraceGraph_ELBO`` and ``RenyiELBO`` run ``backward`` themselves and
have no ``differentiable_loss``. Lightning must own the backward pass (so that DDP synchronises
gradients and gradient clipping sees them), so every estimator here returns the surrogate as a
tensor instead. Each also returns its score-function terms one site at a time, which is what the
gradient-variance monitor differentiates to show which term is noisy.

Estimator semantics follow Pyro 1.9:
  - ``trace``: ``Trace_ELBO``. A non-reparameterised site's score is weighted by the whole cost of
    its plate slice (Rao-Blackwellised over plates only).
  - ``tracegraph``: ``TraceGraph_ELBO``. Its score is weighted only by the costs downstream of it,
    minus a baseline when the guide asks for one. Which costs lie downstream comes from the model's
    declaration (``GenerativeModel.score_dependencies``) when it makes one, so nothing is tracked at
    run time; otherwise from Pyro's provenance tracking, as in ``TraceGraph_ELBO`` itself.
  - ``meanfield``: ``TraceMeanField_ELBO`` (analytic KL terms; reparameterised guides only).
  - ``renyi`` / ``iwae``: the Renyi bound (``alpha``) and the importance-weighted bound (alpha = 0),
    computed per datum, with a score-function term weighted by the bound itself.
  - ``jit_trace`` / ``jit_tracegraph``: ``trace`` / ``tracegraph`` compiled once with ``torch.jit.trace``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import pyro
import pyro.ops.jit
import torch
from pyro import poutine
from pyro.distributions.util import is_identically_zero
from pyro.infer import Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import MultiFrameTensor, get_plate_stacks
from pyro.ops.provenance import detach_provenance, get_provenance
from pyro.poutine.trace_struct import Trace

from airlab.baselines import construct_baseline
from airlab.config.options import Excluded, OneOf, Range
from airlab.errors import ConfigError

DATA_PLATE = "data"
PARTICLE_PLATE = "num_particles_vectorized"
#: Where ``tracegraph`` learns which costs lie downstream of each discrete site.
DEPENDENCIES = ("declared", "provenance")
#: The particle options every estimator takes, with their rules.
Particles = Annotated[int, Range(ge=1)]
PlateNesting = Annotated[int | None, Range(ge=0)]


@dataclass
class LossOutput:
    """One estimate for a batch. Losses are summed over the batch and include the dataset scale."""

    loss: torch.Tensor  # negative bound estimate, detached
    surrogate: torch.Tensor  # differentiate this; its gradient is the estimator's gradient
    baseline_loss: torch.Tensor | None = None  # squared error of learned baselines (in surrogate)
    score_terms: dict[str, torch.Tensor] = field(default_factory=dict)  # per non-reparam site
    guide_trace: Trace | None = None  # the last particle's guide trace, when not compiled


def sample_sites(trace: Trace):
    return [(name, site) for name, site in trace.nodes.items() if site["type"] == "sample"]


def _sum(terms) -> torch.Tensor | float:
    total = 0.0
    for term in terms:
        total = total + term
    return total


def _particle_parts_trace(model_trace: Trace, guide_trace: Trace):
    """Trace_ELBO for one particle: (elbo, surrogate_elbo, score_terms, baseline_loss)."""
    elbo = _sum(site["log_prob_sum"] for _, site in sample_sites(model_trace))
    surrogate_elbo = elbo
    score_terms: dict[str, torch.Tensor] = {}
    log_r = None
    for name, site in sample_sites(guide_trace):
        elbo = elbo - site["log_prob_sum"]
        _, score_function, entropy_term = site["score_parts"]
        if not is_identically_zero(entropy_term):
            surrogate_elbo = surrogate_elbo - entropy_term.sum()
        if not is_identically_zero(score_function):
            if log_r is None:
                log_r = _compute_log_r(model_trace, guide_trace)  # detached costs by plate
            cost = log_r.sum_to(site["cond_indep_stack"])
            score_terms[name] = (score_function * cost).sum()
    return elbo, surrogate_elbo, score_terms, None


def _particle_parts_tracegraph(model_trace: Trace, guide_trace: Trace):
    """TraceGraph_ELBO for one particle, with its downstream costs and baselines."""
    elbo, surrogate_elbo = 0.0, 0.0
    # Provenance tells, for every log-density term, which non-reparameterised sites it depends on:
    # those terms, and only those, form each site's downstream cost.
    downstream = defaultdict(MultiFrameTensor)
    for _, site in sample_sites(model_trace):
        elbo = elbo + site["log_prob_sum"]
        surrogate_elbo = surrogate_elbo + site["log_prob_sum"]
        for upstream in get_provenance(site["log_prob_sum"]):
            downstream[upstream].add((site["cond_indep_stack"], site["log_prob"]))
    for _, site in sample_sites(guide_trace):
        elbo = elbo - site["log_prob_sum"]
        entropy_term = site["score_parts"].entropy_term
        if not is_identically_zero(entropy_term):
            surrogate_elbo = surrogate_elbo - entropy_term.sum()
        for upstream in get_provenance(site["log_prob_sum"]):
            downstream[upstream].add((site["cond_indep_stack"], -site["log_prob"]))

    score_terms, baseline_loss = _score_terms(guide_trace, downstream)
    score_terms = {name: detach_provenance(term) for name, term in score_terms.items()}
    if baseline_loss is not None:
        baseline_loss = detach_provenance(baseline_loss)
    return detach_provenance(elbo), detach_provenance(surrogate_elbo), score_terms, baseline_loss


def _score_terms(guide_trace: Trace, downstream: dict[str, MultiFrameTensor]):
    """Each site's score function times its downstream cost less its baseline; the baselines' loss."""
    score_terms: dict[str, torch.Tensor] = {}
    baseline_loss = None
    for name, cost in downstream.items():
        guide_site = guide_trace.nodes[name]
        cost = cost.sum_to(guide_site["cond_indep_stack"])
        baseline, site_baseline_loss = construct_baseline(name, guide_site, cost)
        if baseline is not None:
            cost = cost - baseline
        if site_baseline_loss is not None:
            baseline_loss = site_baseline_loss + (baseline_loss or 0.0)
        score_function = guide_site["score_parts"].score_function
        score_terms[name] = (score_function * cost.detach()).sum()
    return score_terms, baseline_loss


def _particle_parts_declared(model_trace: Trace, guide_trace: Trace, dependencies: dict[str, list[str]]):
    """TraceGraph_ELBO for one particle, with downstream costs from the model's declared structure.

    ``dependencies[site]`` names every sample site (of the model or the guide) whose log-density
    depends on the non-reparameterised guide ``site``: exactly the terms provenance tracking would
    find, found without tracking anything.
    """
    elbo, surrogate_elbo = 0.0, 0.0
    for _, site in sample_sites(model_trace):
        elbo = elbo + site["log_prob_sum"]
    surrogate_elbo = elbo
    downstream: dict[str, MultiFrameTensor] = {}
    for name, site in sample_sites(guide_trace):
        elbo = elbo - site["log_prob_sum"]
        entropy_term = site["score_parts"].entropy_term
        if not is_identically_zero(entropy_term):
            surrogate_elbo = surrogate_elbo - entropy_term.sum()
        if site["fn"].has_rsample:
            continue
        if name not in dependencies:
            raise ValueError(
                f"guide site {name} samples without rsample, but the model declares no dependencies for it"
            )
        cost = MultiFrameTensor()
        for dependent in dependencies[name]:
            if dependent in model_trace.nodes:
                node = model_trace.nodes[dependent]
                cost.add((node["cond_indep_stack"], node["log_prob"]))
            if dependent in guide_trace.nodes:
                node = guide_trace.nodes[dependent]
                cost.add((node["cond_indep_stack"], -node["log_prob"]))
        downstream[name] = cost
    score_terms, baseline_loss = _score_terms(guide_trace, downstream)
    return elbo, surrogate_elbo, score_terms, baseline_loss


class Estimator:
    """Base class: runs guide and model, and builds the surrogate loss."""

    name = "estimator"
    #: The estimator needs every guide site to have ``rsample``.
    requires_reparameterized = False
    #: The estimator uses the guide's ``infer={"baseline": ...}`` options.
    uses_baselines = False
    #: The estimator is compiled with ``torch.jit.trace``.
    compiled = False

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

    def check_model(self, model) -> None:
        """Refuse, with one line, a model this estimator cannot train."""
        if self.requires_reparameterized and getattr(model, "has_discrete_latents", False):
            raise ConfigError(
                "elbo",
                f"elbo={self.name} needs a fully reparameterised guide, but model="
                f"{type(model).__name__.lower()} samples discrete latents; use elbo=trace or elbo=tracegraph",
            )
        if self.vectorize_particles and not getattr(model, "supports_vectorized_particles", True):
            raise ConfigError(
                "elbo.vectorize_particles",
                f"model={type(model).__name__.lower()} cannot run particles as a batch dimension; "
                "set elbo.vectorize_particles=false",
            )

    def bind(self, model) -> None:
        """Check that this estimator can train ``model``, and read what the model declares about itself."""
        self.check_model(model)

    def __call__(self, model: Callable, guide: Callable, *args, scale: float = 1.0) -> LossOutput:
        raise NotImplementedError


class _ParticleEstimator(Estimator):
    """Estimators built from per-particle parts of (model trace, guide trace)."""

    trace_source = Trace_ELBO

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._traces = self.trace_source(**self._pyro_elbo_kwargs())

    def _trace_source(self):
        """The Pyro ELBO whose ``_get_traces`` runs guide and model (it decides what gets tracked)."""
        return self._traces

    def _particle_parts(self, model_trace: Trace, guide_trace: Trace):
        return _particle_parts_trace(model_trace, guide_trace)

    def __call__(self, model, guide, *args, scale: float = 1.0) -> LossOutput:
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
    name = "trace"


class TraceGraphEstimator(_ParticleEstimator):
    """``TraceGraph_ELBO``. ``dependencies="declared"`` takes the downstream costs from the model's
    ``score_dependencies()`` (no provenance tracking at run time) when the model declares them;
    ``"provenance"`` always tracks them as Pyro does. Both give the same gradient."""

    name = "tracegraph"
    uses_baselines = True
    trace_source = TraceGraph_ELBO  # its traces track provenance of non-reparameterised values

    def __init__(
        self, *args, dependencies: Annotated[str, OneOf(DEPENDENCIES)] = "declared", **kwargs
    ) -> None:
        if dependencies not in DEPENDENCIES:
            raise ConfigError(
                "elbo.dependencies", f"{dependencies!r} is not one of {', '.join(DEPENDENCIES)}"
            )
        super().__init__(*args, **kwargs)
        self.dependencies = dependencies
        self.declared: dict[str, list[str]] | None = None
        self._untracked = Trace_ELBO(**self._pyro_elbo_kwargs())

    def bind(self, model) -> None:
        super().bind(model)
        declared = model.score_dependencies() if self.dependencies == "declared" else None
        self.declared = None if declared is None else {k: list(v) for k, v in declared.items()}

    def _trace_source(self):
        return self._traces if self.declared is None else self._untracked

    def _particle_parts(self, model_trace: Trace, guide_trace: Trace):
        if self.declared is None:
            return _particle_parts_tracegraph(model_trace, guide_trace)
        return _particle_parts_declared(model_trace, guide_trace, self.declared)


class MeanFieldEstimator(Estimator):
    name = "meanfield"
    requires_reparameterized = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._elbo = TraceMeanField_ELBO(**self._pyro_elbo_kwargs())

    def __call__(self, model, guide, *args, scale: float = 1.0) -> LossOutput:
        if scale != 1.0:
            model, guide = poutine.scale(model, scale), poutine.scale(guide, scale)
        surrogate = self._elbo.differentiable_loss(model, guide, *args)
        return LossOutput(surrogate.detach(), surrogate)


def callable_key(fn: Callable) -> tuple:
    """What identifies a function across calls: ``obj.method`` makes a new bound-method object at every
    attribute access, so its identity is the (object, function) pair, not ``id(fn)``."""
    owner = getattr(fn, "__self__", None)
    if owner is not None and hasattr(fn, "__func__"):
        return (id(owner), fn.__func__)
    return (id(fn),)


class _Compiled:
    """Compiles an estimator's eager surrogate with ``pyro.ops.jit.trace``, once per (model, guide,
    scale). Arguments are traced by count, so the batch size must stay fixed (the training loader
    drops its ragged last batch).

    airlab compiles its own surrogates rather than calling Pyro's ``JitTrace_ELBO``: under torch 2.14
    the latter's traced graph counts each ``log_prob_sum`` twice in the backward pass (it feeds both
    the loss and the surrogate), doubling the model's gradients; tests/test_unbiasedness.py checks it.
    """

    name = "compiled"
    compiled = True

    def __init__(self, *args, ignore_jit_warnings: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ignore_jit_warnings = ignore_jit_warnings
        self._compiled: dict[tuple, pyro.ops.jit.CompiledFunction] = {}
        self._has_baseline_loss: dict[tuple, bool] = {}

    def __call__(self, model, guide, *args, scale: float = 1.0) -> LossOutput:
        key = (callable_key(model), callable_key(guide), scale)
        if key not in self._compiled:
            eager = super().__call__

            def loss_parts(*inner_args):
                # Runs as Python only while tracing: record whether the guide has learned baselines.
                out = eager(model, guide, *inner_args, scale=scale)
                self._has_baseline_loss[key] = out.baseline_loss is not None
                baseline_loss = out.baseline_loss if out.baseline_loss is not None else out.loss * 0
                return out.loss, out.surrogate, baseline_loss

            self._compiled[key] = pyro.ops.jit.trace(loss_parts, ignore_warnings=self.ignore_jit_warnings)
        loss, surrogate, baseline_loss = self._compiled[key](*args)
        baseline_loss = baseline_loss.detach() if self._has_baseline_loss.get(key) else None
        return LossOutput(loss.detach(), surrogate, baseline_loss)

    @property
    def num_compilations(self) -> int:
        return sum(len(fn.compiled) for fn in self._compiled.values())


class JitTraceEstimator(_Compiled, TraceEstimator):
    """``trace``, compiled once with ``torch.jit.trace``."""

    name = "jit_trace"


class JitTraceGraphEstimator(_Compiled, TraceGraphEstimator):
    """``tracegraph``, compiled once with ``torch.jit.trace``."""

    name = "jit_tracegraph"

    def check_model(self, model) -> None:
        super().check_model(model)
        if getattr(model, "baseline", "none") == "decaying_avg":
            raise ConfigError(
                "model.baseline",
                "elbo=jit_tracegraph cannot update a decaying-average baseline (its running mean "
                "lives in Pyro's param store, outside the compiled graph); "
                "use model.baseline=nvil|none or elbo=tracegraph",
            )


class RenyiEstimator(Estimator):
    """The Renyi bound per datum: ``1/(1-alpha) * log mean_k w_k^(1-alpha)``; alpha=0 is the IWAE bound.

    Unlike Pyro's ``RenyiELBO``, which multiplies the weights of a whole minibatch together, the
    bound here is computed for each image of the ``data`` plate and then summed, as in the IWAE paper.
    A non-reparameterised site's score is weighted by the (detached) bound of its datum.
    """

    name = "renyi"

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
    def _per_datum(model_trace: Trace, guide_trace: Trace):
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

    def __call__(self, model, guide, *args, scale: float = 1.0) -> LossOutput:
        log_ws, scores = [], defaultdict(list)
        guide_trace = None
        for model_trace, guide_trace in self._traces._get_traces(model, guide, args, {}):
            log_w, site_scores = self._per_datum(model_trace, guide_trace)
            if not self.vectorize_particles or self.num_particles == 1:
                log_w = log_w.unsqueeze(0)
                site_scores = {name: s.unsqueeze(0) for name, s in site_scores.items()}
            log_ws.append(log_w.reshape(log_w.shape[0], -1))
            for name, s in site_scores.items():
                scores[name].append(s.reshape(s.shape[0], -1))
        log_w = torch.cat(log_ws)  # [K, B]
        one_minus_alpha = 1.0 - self.alpha
        bound = (torch.logsumexp(one_minus_alpha * log_w, 0) - math.log(len(log_w))) / one_minus_alpha
        # The score of every particle's discrete draws is weighted by its datum's bound.
        score_terms = {
            name: (torch.cat(parts) * bound.detach()).sum() * scale for name, parts in scores.items()
        }
        surrogate = -(bound.sum() * scale + _sum(score_terms.values()))
        return LossOutput(-bound.sum().detach() * scale, surrogate, None, score_terms, guide_trace)


class IWAEEstimator(RenyiEstimator):
    """The importance-weighted bound (Burda et al. 2016) with ``num_particles`` = K samples."""

    name = "iwae"

    def __init__(
        self,
        num_particles: Particles = 5,
        vectorize_particles: bool = False,
        max_plate_nesting: PlateNesting = None,
    ) -> None:
        super().__init__(0.0, num_particles, vectorize_particles, max_plate_nesting)


@torch.no_grad()
def elbo_estimate(model: Callable, guide: Callable, *args) -> torch.Tensor:
    """A single-sample ELBO for a batch (summed over it), without gradients."""
    guide_trace = poutine.trace(guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    return model_trace.log_prob_sum() - guide_trace.log_prob_sum()
