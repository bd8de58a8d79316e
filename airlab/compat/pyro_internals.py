"""Pyro's private functions and param-store internals that the estimators and the variance report use.

Pyro 1.9 keeps these private, but they are the very pieces its own ELBOs are built from: reusing them
keeps airlab's surrogates equal to Pyro's to the last bit (the unbiasedness and equality tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyro
import torch
from pyro.infer import ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.tracegraph_elbo import _get_baseline_options
from pyro.poutine.trace_struct import Trace


def elbo_traces(
    elbo: ELBO, model: Callable, guide: Callable, args: tuple[Any, ...]
) -> Iterator[tuple[Trace, Trace]]:
    """The (model trace, guide trace) of each particle, as ``elbo`` draws them (``ELBO._get_traces``:
    vectorised or not, with its ``max_plate_nesting`` checks), without running Pyro's own loss."""
    return elbo._get_traces(model, guide, args, {})


def downstream_costs_by_plate(model_trace: Trace, guide_trace: Trace) -> Any:
    """``Trace_ELBO``'s per-plate detached costs (``_compute_log_r``): each score's weight in ``trace``."""
    return _compute_log_r(model_trace, guide_trace)


def baseline_options(guide_site: dict[str, Any]) -> tuple[Any, Any, bool, float, Any]:
    """The ``infer={"baseline": ...}`` options of a guide site as ``TraceGraph_ELBO`` reads them:
    ``(nn_baseline, nn_baseline_input, use_decaying_avg_baseline, beta, baseline_value)``."""
    return _get_baseline_options(guide_site)


def store_tensor(name: str) -> torch.Tensor:
    """The param store's own (unconstrained) tensor for ``name``, to update in place.

    Reading through ``store[name]`` would build a constrained view, and writing ``store[name] = ...``
    every step adds a reverse-map entry per new tensor that Pyro never frees (memory grows without
    bound): the decaying-average baselines update the stored tensor itself.
    """
    return pyro.get_param_store()._params[name]


def store_entries() -> dict[str, tuple[torch.Tensor, Any]]:
    """Every param-store entry: name -> (its unconstrained tensor, its constraint)."""
    store = pyro.get_param_store()
    return {name: (tensor, store._constraints[name]) for name, tensor in store._params.items()}


def put_store_entry(name: str, tensor: torch.Tensor, constraint: Any) -> None:
    """Put ``tensor`` back in the store under ``name`` as the same object (not a copy), as
    ``pyro.param`` registered it: a compiled estimator finds it by name, and the module holds it."""
    store = pyro.get_param_store()
    if name in store._params and store._params[name] is not tensor:
        del store[name]
    store._params[name] = tensor
    store._param_to_name[tensor] = name
    store._constraints[name] = constraint
