"""Estimators that sum discrete latents out instead of sampling them.

``trace_enum`` is Pyro's ``TraceEnum_ELBO``: every guide site marked ``infer={"enumerate": "parallel"}``
is summed out over its support, in parallel along a new batch dimension on the left of the plates
(``max_plate_nesting`` says how many plates there are); unmarked discrete sites keep their score-function
terms, without baselines.

``enum_counts``: the ELBO with the discrete latents summed out exactly, weighted by the guide.

A model whose discrete latents take few configurations with non-zero probability declares them
(:meth:`GenerativeModel.discrete_configurations`): AIR with at most T objects has T + 1 (its
presence flags are ``1...1 0...0``: n present objects, then none). For each configuration c the guide
runs with the discrete sites fixed to c and its continuous sites drawn as usual (reparameterised), and
the model is scored on the same values. With ``q(c)`` the guide's probability of c along that draw,

    ELBO = sum_c E[ q(c) (log p(x, z_c) - log q(z_c)) ]

(each term is exact in the discrete part and unbiased in the continuous one), so the discrete latents
contribute no score-function term, and no variance, at all. All configurations run as one batch: each
argument is repeated C times along its first (data) dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from airlab.contracts.estimator import DATA_PLATE, Estimator, LossOutput, Particles, PlateNesting
from airlab.errors import ConfigError
from airlab.estimators.surrogates import sample_sites

if TYPE_CHECKING:
    from airlab.contracts.model import GenerativeModel


def per_datum_log_prob(trace: poutine.Trace, names: set[str] | None, exclude: set[str]) -> torch.Tensor:
    """The log-densities of ``trace``'s sample sites (only ``names`` if given; never ``exclude``), each
    summed over everything but the ``data`` plate: ``[rows]``."""
    total = 0.0
    for name, site in sample_sites(trace):
        if name in exclude or (names is not None and name not in names):
            continue
        log_prob = site["log_prob"]
        dims = [f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
        if log_prob.dim() > 1:  # sum every batch dimension except the data plate's
            keep = log_prob.dim() + dims[0] if dims else 0
            log_prob = log_prob.sum([d for d in range(log_prob.dim()) if d != keep])
        total = total + log_prob
    return torch.as_tensor(total)


class CountEnumerationEstimator(Estimator):
    """The ELBO with the model's declared discrete configurations enumerated (one particle)."""

    name = "enum_counts"
    requires_discrete_configurations = True
    refuses_learned_baselines = True  # nothing is left for a baseline to reduce

    def __init__(self) -> None:
        super().__init__(num_particles=1, vectorize_particles=False, max_plate_nesting=None)
        self.configurations: dict[str, torch.Tensor] | None = None

    def bind(self, model: GenerativeModel) -> None:
        """Read the model's discrete configurations (refused in one line when it declares none)."""
        super().bind(model)
        self.configurations = model.discrete_configurations()
        if not self.configurations:
            raise ConfigError(
                "elbo",
                f"elbo={self.name} needs a model that declares its discrete configurations; "
                f"model={type(model).__name__.lower()} declares none; use elbo=trace or elbo=tracegraph",
            )

    def __call__(self, model: Callable, guide: Callable, *args: Any, scale: float = 1.0) -> LossOutput:
        """Negative ELBO summed over the batch (times ``scale``); the surrogate is the same sum, exact in
        the discrete latents and reparameterised in the rest."""
        if self.configurations is None:
            raise RuntimeError("CountEnumerationEstimator.bind(model) must be called first")
        num_configs = next(iter(self.configurations.values())).shape[0]
        batch = args[0].shape[0]
        repeated = [a.repeat(num_configs, *([1] * (a.dim() - 1))) if torch.is_tensor(a) else a for a in args]
        # Configuration c for every datum: rows c * B ... (c + 1) * B - 1.
        data = {
            name: values.to(device=args[0].device, dtype=args[0].dtype).repeat_interleave(batch, 0)
            for name, values in self.configurations.items()
        }
        guide_trace = poutine.trace(poutine.condition(guide, data=data)).get_trace(*repeated)
        # The discrete sites are observed in both; the continuous ones replay the guide's draws.
        conditioned_model = poutine.condition(model, data=data)
        model_trace = poutine.trace(poutine.replay(conditioned_model, trace=guide_trace)).get_trace(*repeated)
        guide_trace.compute_log_prob()
        model_trace.compute_log_prob()
        discrete = set(self.configurations)
        log_q_discrete = per_datum_log_prob(guide_trace, discrete, set())  # [C * B]
        log_q_continuous = per_datum_log_prob(guide_trace, None, discrete)
        log_p = per_datum_log_prob(model_trace, None, set())
        cost = (log_p - log_q_continuous - log_q_discrete).view(num_configs, batch)
        weight = log_q_discrete.view(num_configs, batch).exp()  # q(c) along each draw; sums to 1 per datum
        elbo = (weight * cost).sum() * scale
        return LossOutput(-elbo.detach(), -elbo, None, {}, guide_trace)


class TraceEnumEstimator(Estimator):
    """``TraceEnum_ELBO``: the guide's sites marked ``infer={"enumerate": "parallel"}`` summed out.

    ``max_plate_nesting``: this key when set, else the model's declaration
    (``GenerativeModel.max_plate_nesting``), else Pyro's guess from a first run of model and guide.
    """

    name = "trace_enum"
    # Baselines are no part of TraceEnum_ELBO: a baseline network would be trained but unused.
    refuses_learned_baselines = True

    def __init__(
        self,
        num_particles: Particles = 1,
        vectorize_particles: bool = False,
        max_plate_nesting: PlateNesting = None,
        strict_enumeration_warning: bool = True,
    ) -> None:
        super().__init__(num_particles, vectorize_particles, max_plate_nesting)
        self.strict_enumeration_warning = strict_enumeration_warning
        self._elbo = self._make_elbo(self.max_plate_nesting)

    def _make_elbo(self, max_plate_nesting: float) -> TraceEnum_ELBO:
        return TraceEnum_ELBO(
            num_particles=self.num_particles,
            vectorize_particles=self.vectorize_particles,
            max_plate_nesting=max_plate_nesting,
            strict_enumeration_warning=self.strict_enumeration_warning,
        )

    def bind(self, model: GenerativeModel) -> None:
        """Check the model, and take its declared ``max_plate_nesting`` unless this estimator's key is set."""
        super().bind(model)
        if self.max_plate_nesting == float("inf") and model.max_plate_nesting is not None:
            self.max_plate_nesting = model.max_plate_nesting
            self._elbo = self._make_elbo(self.max_plate_nesting)

    def __call__(self, model: Callable, guide: Callable, *args: Any, scale: float = 1.0) -> LossOutput:
        """Negative ELBO with the enumerated sites summed out (times ``scale``); the surrogate is Pyro's
        differentiable loss, whose gradient is the estimator's."""
        if scale != 1.0:
            model, guide = poutine.scale(model, scale), poutine.scale(guide, scale)
        loss = self._elbo.differentiable_loss(model, guide, *args)
        return LossOutput(loss.detach(), loss)
