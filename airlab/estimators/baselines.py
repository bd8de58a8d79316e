"""Baselines for score-function terms: what a guide asks for with ``infer={"baseline": {...}}``.

The options are Pyro's (``use_decaying_avg_baseline``, ``baseline_beta``, ``baseline_value``,
``nn_baseline``, ``nn_baseline_input``) and so is the arithmetic, with one difference: Pyro writes
each new decaying average into its param store as a fresh tensor, and ``ParamStoreDict`` keeps a
reverse-map entry for every tensor ever assigned, so memory grows at every step. Here the average is
registered once and then updated in place: the store holds one tensor per site for the whole run, and
checkpoints (which save the store) and the gradient-variance monitor (which snapshots it) see it as
before.

Under DDP the averages are synchronised, not rank-local: every rank holds the averages of the whole
global batch (see :func:`decaying_average`), so rank 0's checkpoint is every rank's state, and a run
on W ranks of B/W images keeps the averages one process keeps on B images.
"""

from __future__ import annotations

import pyro
import torch

from airlab.compat.pyro_internals import baseline_options, store_tensor

#: The param-store name of a site's decaying average (Pyro's own name, so old checkpoints load).
AVERAGE_PREFIX = "__baseline_avg_downstream_cost_"


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size: ``(0, 1)`` unless torch.distributed is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def decaying_average(name: str, cost: torch.Tensor, beta: float) -> torch.Tensor:
    """The average of ``cost`` before this call (the baseline), updated in place with weight ``beta``.

    Pyro keeps one average per batch position (the data plate is the cost's last dimension). Under
    DDP the store holds the averages of the whole global batch, ranks in order: this rank reads and
    updates its own slice, and :func:`synchronise_averages` then gathers every rank's slice, so that
    all ranks hold what one process holds after a step on the concatenated batch.
    """
    store = pyro.get_param_store()
    key = AVERAGE_PREFIX + name
    rank, world = rank_and_world()
    local = cost.shape[-1] if cost.dim() else 1
    if key not in store:
        shape = (*cost.shape[:-1], local * world) if cost.dim() else cost.shape
        store[key] = cost.detach().new_zeros(shape)
    average = store_tensor(key)  # unconstrained == constrained: a real-valued param
    if cost.dim() and average.dim():
        if average.shape[-1] != local * world:
            raise ValueError(
                f"site {name}: the decaying average holds {average.shape[-1]} batch positions, expected "
                f"{local * world} ({local} images on each of {world} ranks): another batch size?"
            )
        average = average.narrow(-1, rank * local, local)
    old = average.detach().clone()
    with torch.no_grad():
        updated = average * beta + cost.detach() * (1 - beta)
        # A non-finite cost (a step the module will skip) must not poison the average for good.
        average.copy_(torch.where(torch.isfinite(updated), updated, average))
    return old


def synchronise_averages() -> None:
    """Gather every rank's slice of every decaying average (a collective: all ranks call it, once per
    training step, after the estimator). A site outside the data plate (a scalar average) takes the
    ranks' mean. Nothing happens without torch.distributed, on one rank, or without averages."""
    rank, world = rank_and_world()
    if world == 1:  # the usual case: no store scan on the training step's hot path
        return
    store = pyro.get_param_store()
    keys = sorted(k for k in store.keys() if k.startswith(AVERAGE_PREFIX))
    if not keys:
        return
    with torch.no_grad():
        for key in keys:
            average = store_tensor(key)
            if average.dim() == 0:
                torch.distributed.all_reduce(average)
                average.div_(world)
                continue
            local = average.shape[-1] // world
            mine = average.narrow(-1, rank * local, local).detach().contiguous()
            parts = [torch.empty_like(mine) for _ in range(world)]
            torch.distributed.all_gather(parts, mine)
            average.copy_(torch.cat(parts, dim=-1))


def construct_baseline(
    name: str, guide_site: dict, cost: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(baseline to subtract from ``cost``, squared-error loss of a learned baseline); ``None`` where absent.

    ``cost`` is the site's downstream cost, already summed to its plates.
    """
    nn_baseline, nn_input, use_average, beta, value = baseline_options(guide_site)
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
