"""Baselines for score-function terms: what a guide asks for with ``infer={"baseline": {...}}``.

The options are Pyro's (``use_decaying_avg_baseline``, ``baseline_beta``, ``baseline_value``,
``nn_baseline``, ``nn_baseline_input``) and so is the arithmetic, with one difference: Pyro writes
each new decaying average into its param store as a fresh tensor, and ``ParamStoreDict`` keeps a
reverse-map entry for every tensor ever assigned, so memory grows at every step. Here the average is
registered once and then updated in place: the store holds one tensor per site for the whole run, and
checkpoints (which save the store) and the gradient-variance monitor (which snapshots it) see it as
before.
"""

from __future__ import annotations

import pyro
import torch
from pyro.infer.tracegraph_elbo import _get_baseline_options

#: The param-store name of a site's decaying average (Pyro's own name, so old checkpoints load).
AVERAGE_PREFIX = "__baseline_avg_downstream_cost_"


def decaying_average(name: str, cost: torch.Tensor, beta: float) -> torch.Tensor:
    """The average of ``cost`` before this call (the baseline), updated in place with weight ``beta``."""
    store = pyro.get_param_store()
    key = AVERAGE_PREFIX + name
    if key not in store:
        store[key] = torch.zeros_like(cost.detach())
    average = store._params[key]  # unconstrained == constrained: a real-valued param
    old = average.detach().clone()
    with torch.no_grad():
        updated = average * beta + cost.detach() * (1 - beta)
        # A non-finite cost (a step the module will skip) must not poison the average for good.
        average.copy_(torch.where(torch.isfinite(updated), updated, average))
    return old


def construct_baseline(
    name: str, guide_site: dict, cost: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(baseline to subtract from ``cost``, squared-error loss of a learned baseline); ``None`` where absent.

    ``cost`` is the site's downstream cost, already summed to its plates.
    """
    nn_baseline, nn_input, use_average, beta, value = _get_baseline_options(guide_site)
    if nn_baseline is not None and value is not None:
        raise ValueError(f"site {name}: baseline_value and nn_baseline cannot be used together")
    baseline = None
    if use_average:
        baseline = decaying_average(name, cost, beta)
    learned = None
    if nn_baseline is not None:
        learned = nn_baseline(nn_input.detach())
    elif value is not None:
        learned = value  # the guide keeps its graph to the baseline's own parameters
    loss = None
    if learned is not None:
        baseline = learned if baseline is None else baseline + learned
        loss = (cost.detach() - baseline).pow(2).sum()
    if baseline is not None and baseline.shape != cost.shape:
        raise ValueError(
            f"site {name}: the baseline has shape {tuple(baseline.shape)}, expected {tuple(cost.shape)}"
        )
    return baseline, loss
