"""The ELBO estimators, their score-function baselines and the non-finite guard.

May import: contracts, utils.

ELBO estimators that hand the training loop a differentiable surrogate loss.

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
  - ``vimco``: the IWAE bound with VIMCO's leave-one-out learning signal per particle (Mnih & Rezende
    2016) weighting each particle's score-function term: no learned baseline.
  - ``trace_enum``: ``TraceEnum_ELBO``: the guide's sites marked ``infer={"enumerate": "parallel"}``
    are summed out exactly (semi-supervised VAEs, mixtures); ``max_plate_nesting`` from the key or
    the model's declaration.
  - ``enum_counts``: the ELBO with the model's declared discrete configurations summed out exactly
    (AIR's object counts), so they contribute no score-function term.
  - ``jit_trace`` / ``jit_tracegraph``: ``trace`` / ``tracegraph`` compiled once with ``torch.jit.trace``.

The base class is :class:`airlab.contracts.estimator.Estimator`. The estimators live in ``elbo``
(``trace``, ``tracegraph``, ``meanfield``), ``compiled`` (the ``jit_*`` ones), ``renyi`` (``renyi``,
``iwae``), ``vimco``, ``enumeration`` (``enum_counts``) and ``surrogates`` (their per-particle parts);
every name is re-exported here, so
``_target_: airlab.estimators.TraceEstimator`` and the like keep working.
"""

from airlab.contracts.estimator import DATA_PLATE, PARTICLE_PLATE, Estimator, LossOutput
from airlab.estimators.compiled import JitTraceEstimator, JitTraceGraphEstimator, callable_key
from airlab.estimators.elbo import (
    DEPENDENCIES,
    MeanFieldEstimator,
    TraceEstimator,
    TraceGraphEstimator,
    elbo_estimate,
)
from airlab.estimators.enumeration import CountEnumerationEstimator, TraceEnumEstimator
from airlab.estimators.renyi import IWAEEstimator, RenyiEstimator
from airlab.estimators.surrogates import sample_sites
from airlab.estimators.vimco import VIMCOEstimator

__all__ = [
    "CountEnumerationEstimator",
    "DATA_PLATE",
    "DEPENDENCIES",
    "PARTICLE_PLATE",
    "Estimator",
    "IWAEEstimator",
    "JitTraceEstimator",
    "JitTraceGraphEstimator",
    "LossOutput",
    "MeanFieldEstimator",
    "RenyiEstimator",
    "TraceEstimator",
    "TraceEnumEstimator",
    "TraceGraphEstimator",
    "VIMCOEstimator",
    "callable_key",
    "elbo_estimate",
    "sample_sites",
]
