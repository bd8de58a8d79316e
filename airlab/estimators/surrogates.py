"""The per-particle parts of the estimators: (ELBO, surrogate ELBO, score terms, baseline loss) of one
(model trace, guide trace) pair, as ``Trace_ELBO`` and ``TraceGraph_ELBO`` compute them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer.util import MultiFrameTensor
from pyro.ops.provenance import detach_provenance, get_provenance
from pyro.poutine.trace_struct import Trace

from airlab.compat.pyro_internals import downstream_costs_by_plate
from airlab.estimators.baselines import construct_baseline

#: One particle's (ELBO, surrogate ELBO, score terms by site, baseline loss).
ParticleParts = tuple[
    torch.Tensor | float, torch.Tensor | float, dict[str, torch.Tensor], torch.Tensor | None
]


def sample_sites(trace: Trace) -> list[tuple[str, dict[str, Any]]]:
    """The ``(name, site)`` pairs of the sample sites in ``trace``, in execution order."""
    return [(name, site) for name, site in trace.nodes.items() if site["type"] == "sample"]


def _sum(terms: Iterable[torch.Tensor | float]) -> torch.Tensor | float:
    total = 0.0
    for term in terms:
        total = total + term
    return total


def _particle_parts_trace(model_trace: Trace, guide_trace: Trace) -> ParticleParts:
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
                log_r = downstream_costs_by_plate(model_trace, guide_trace)  # detached costs by plate
            cost = log_r.sum_to(site["cond_indep_stack"])
            score_terms[name] = (score_function * cost).sum()
    return elbo, surrogate_elbo, score_terms, None


def _particle_parts_tracegraph(model_trace: Trace, guide_trace: Trace) -> ParticleParts:
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


def _score_terms(
    guide_trace: Trace, downstream: dict[str, MultiFrameTensor]
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
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


def _particle_parts_declared(
    model_trace: Trace, guide_trace: Trace, dependencies: dict[str, list[str]]
) -> ParticleParts:
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
