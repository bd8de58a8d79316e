"""The contract between a model and an estimator: the ``Estimator`` base class, the ``LossOutput`` it
returns, the names of the plates it scales, and the rule that says which estimator can train which model
(read off what both classes declare, never guessed from names).

The estimators in :mod:`airlab.estimators` subclass :class:`Estimator`; the config validator
(:mod:`airlab.config.validate`) applies :func:`check_estimator_fits_model` to the classes a config names
before anything is built, and :meth:`Estimator.check_model` applies it to a built model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import torch

from airlab.contracts.options import ChecksOptions, Range, describe
from airlab.errors import ConfigError

if TYPE_CHECKING:  # only type hints: the contract needs no model and no Pyro at run time
    from pyro.poutine.trace_struct import Trace

    from airlab.contracts.model import GenerativeModel

#: The plate over data items that the dataset scale N/B applies to.
DATA_PLATE = "data"
#: The plate Pyro adds for vectorised particles.
PARTICLE_PLATE = "num_particles_vectorized"

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


class Estimator(ChecksOptions):
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


def check_estimator_fits_model(
    estimator: Any,
    model_class: type,
    *,
    vectorize_particles: bool,
    baseline_kind: str,
    baseline_value: Any = None,
) -> None:
    """Raise ``ConfigError`` when ``estimator`` (an estimator class or instance) cannot train a model of
    ``model_class`` whose guide asks for a ``baseline_kind`` baseline (``none``, ``decaying_avg``,
    ``learned``; ``baseline_value`` is the option's value as the user wrote it)."""
    elbo, model = f"elbo={estimator.name}", f"model={model_class.__name__.lower()}"
    if estimator.requires_reparameterized and model_class.has_discrete_latents:
        raise ConfigError(
            "elbo",
            f"{elbo} needs a fully reparameterised guide, but {model} samples discrete latents; "
            "use elbo=trace or elbo=tracegraph",
        )
    if estimator.requires_discrete_configurations and not model_class.has_enumerable_discrete_latents:
        raise ConfigError(
            "elbo",
            f"{elbo} sums out discrete latents that the model enumerates, but {model} declares no "
            "discrete configurations; use elbo=trace or elbo=tracegraph",
        )
    if vectorize_particles and not model_class.supports_vectorized_particles:
        raise ConfigError(
            "elbo.vectorize_particles",
            f"true is not valid for {model}: it cannot run particles as a batch dimension; "
            "set elbo.vectorize_particles=false",
        )
    key = f"model.{model_class.baseline_option or 'baseline'}"
    value = describe(baseline_kind if baseline_value is None else baseline_value)
    if baseline_kind == "decaying_avg" and not estimator.supports_decaying_avg_baseline:
        raise ConfigError(
            key,
            f"{value} is not valid with {elbo}: it cannot update a decaying-average baseline (its running "
            f"mean lives in Pyro's param store, outside the compiled graph); use {key}=nvil|none or "
            "elbo=tracegraph",
        )
    if baseline_kind == "learned" and estimator.refuses_learned_baselines:
        name = str(baseline_value or "learned").upper()
        raise ConfigError(
            key,
            f"{value} is not valid with {elbo}: the {name} baseline network would be trained but unused "
            f"(this bound uses no baselines, and DDP fails on unused parameters); use {key}=none, "
            "or elbo=tracegraph to use the network",
        )
