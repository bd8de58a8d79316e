"""Gradient variance of an ELBO estimator, per parameter group and per score-function term.

``gradient_variance`` draws K independent gradient estimates of an estimator's surrogate loss on one
fixed minibatch and summarises them:

- per parameter group: the total variance ``tr Cov[g] = sum_i Var[g_i]`` (unbiased, divisor K-1),
  the mean squared norm ``E ||g||^2`` and the SNR ``||E g|| / sqrt(tr Cov[g])``;
- per non-reparameterised site: the total variance of the gradient of that site's score-function term
  alone, over every parameter the term reaches (in practice the guide's: the cost it multiplies is
  detached, so it never reaches the model's or the baselines' parameters).

It has no side effects. No optimizer runs and ``torch.autograd.grad`` leaves ``.grad`` alone (the
``.grad`` attributes are put back anyway). Pyro param-store entries that are not module parameters
(decaying-average baselines, which every TraceGraph call updates) are restored before every draw, so
the K draws are independent and identically distributed given the current state, and once more at the
end. The module's buffers are restored too. The RNG streams (torch CPU and CUDA, ``random``, numpy) are
saved, reseeded with ``seed`` for the draws (so a measurement is reproducible) and restored, so a
training run samples the same numbers with or without a measurement in between.

Memory: each quantity keeps a running mean and sum of squared deviations per coordinate (Welford's
update), two tensors the size of the parameters it covers, whatever K. Stacking the K gradients
instead would need K times the model's size: 400 MB for AIR's 6 M parameters at K = 16. Sums and
sums of squares would cancel badly when the mean is large against the spread (a high SNR).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from torch import nn

from airlab.compat.pyro_internals import put_store_entry, store_entries
from airlab.contracts.estimator import Estimator


@dataclass
class GroupStats:
    """Gradient statistics of one parameter group over the K draws."""

    var: float  # trace of the covariance of the flattened gradient (divisor K-1)
    snr: float  # ||mean|| / sqrt(var)
    mean_sq_norm: float  # E ||g||^2
    #: |mean_i| / sd_i averaged over the coordinates (Rainforth et al.'s per-dimension SNR); coordinates
    #: that never vary are left out. Its floor, where every true mean is zero, is sqrt(2/pi)/sqrt(K).
    snr_per_dim: float = float("nan")


@dataclass
class VarianceResult:
    """One measurement: statistics per parameter group, and the variance of each site's score term."""

    groups: dict[str, GroupStats]
    terms: dict[str, float]  # site -> total variance of its score-function term's gradient
    #: Groups whose parameters got no gradient in any draw (e.g. the baseline net under ``trace``).
    unused_groups: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The ``{"groups": {...}, "terms": {...}}`` entry of ``variance_report.json``."""
        return {
            "groups": {
                name: {
                    "var": s.var,
                    "snr": s.snr,
                    "mean_sq_norm": s.mean_sq_norm,
                    "snr_per_dim": s.snr_per_dim,
                }
                for name, s in self.groups.items()
            },
            "terms": {site: {"var": var} for site, var in self.terms.items()},
        }

    def scalars(self) -> dict[str, float]:
        """The TensorBoard tags: ``grad_var/<group>``, ``grad_snr/<group>``, ``grad_mean_sq_norm/<group>``,
        ``grad_var_term/<site>``."""
        out: dict[str, float] = {}
        for name, s in self.groups.items():
            out[f"grad_var/{name}"] = s.var
            out[f"grad_snr/{name}"] = s.snr
            out[f"grad_mean_sq_norm/{name}"] = s.mean_sq_norm
        for site, var in self.terms.items():
            out[f"grad_var_term/{site}"] = var
        return out


class _Moments:
    """Running per-coordinate mean and sum of squared deviations of a list of tensors.

    A parameter whose gradient is ``None`` in a draw contributes zeros. State is created lazily as
    zeros, which is exactly Welford's state after any number of zero observations, so a parameter
    first reached in a later draw is still counted correctly.
    """

    def __init__(self, size: int, dtype: torch.dtype) -> None:
        self.count = 0
        self.dtype = dtype
        self.mean: list[torch.Tensor | None] = [None] * size
        self.m2: list[torch.Tensor | None] = [None] * size
        self.sq_norm_sum: torch.Tensor | float = 0.0

    @property
    def used(self) -> bool:
        """Whether any draw reached this group (state exists only for parameters that got a gradient)."""
        return any(m is not None for m in self.mean)

    def add(self, grads: Sequence[torch.Tensor | None]) -> None:
        self.count += 1
        sq_norm: torch.Tensor | float = 0.0
        for i, grad in enumerate(grads):
            if grad is None and self.mean[i] is None:
                continue
            if grad is not None:
                x = grad.detach().to(self.dtype).reshape(-1)
                sq_norm = sq_norm + x.dot(x)
            else:
                x = torch.zeros_like(self.mean[i])
            if self.mean[i] is None:
                self.mean[i], self.m2[i] = torch.zeros_like(x), torch.zeros_like(x)
            delta = x - self.mean[i]
            self.mean[i] += delta / self.count
            self.m2[i] += delta * (x - self.mean[i])
        self.sq_norm_sum = self.sq_norm_sum + sq_norm

    def total_variance(self) -> float:
        if self.count < 2:
            return float("nan")
        return sum(float(m2.sum()) for m2 in self.m2 if m2 is not None) / (self.count - 1)

    def stats(self) -> GroupStats:
        var = self.total_variance()
        mean_norm = math.sqrt(sum(float(m.dot(m)) for m in self.mean if m is not None))
        if var > 0:
            snr = mean_norm / math.sqrt(var)
        else:  # a deterministic gradient: infinitely reliable unless it is zero
            snr = math.inf if mean_norm > 0 else 0.0
        return GroupStats(
            var=var,
            snr=snr,
            mean_sq_norm=float(self.sq_norm_sum) / self.count,
            snr_per_dim=self.snr_per_dim(),
        )

    def snr_per_dim(self) -> float:
        if self.count < 2:
            return float("nan")
        mean = torch.cat([m for m in self.mean if m is not None])
        sd = torch.cat([m2 for m2 in self.m2 if m2 is not None]).div(self.count - 1).sqrt()
        varies = sd > 0
        return float((mean[varies].abs() / sd[varies]).mean()) if bool(varies.any()) else float("nan")


# -- side-effect guards ---------------------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    """torch CPU, every initialised CUDA device, ``random`` and numpy."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the RNG streams saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class ParamStoreSnapshot:
    """Pyro param-store entries other than the given (module) tensors, restorable in place.

    Entries created later are removed on restore, except registrations of the given tensors: training
    would register them the same way, and a compiled estimator looks them up by name.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.skip = {id(t) for t in exclude}
        entries = store_entries()
        self.names = set(entries)
        self.saved = {
            name: (tensor, tensor.detach().clone(), constraint)
            for name, (tensor, constraint) in entries.items()
            if id(tensor) not in self.skip
        }

    def restore(self) -> None:
        """Put the saved values and entries back; drop entries created since, except the given tensors."""
        store = pyro.get_param_store()
        for name, (tensor, _) in store_entries().items():
            if name not in self.names and id(tensor) not in self.skip:
                del store[name]
        for name, (tensor, value, constraint) in self.saved.items():
            with torch.no_grad():
                tensor.copy_(value)
            put_store_entry(name, tensor, constraint)  # e.g. a decaying average replaced by its update


# -- the measurement ------------------------------------------------------------------------------


def _unique_params(groups: Mapping[str, Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    seen: set[int] = set()
    params = []
    for group in groups.values():
        for p in group:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def gradient_variance(
    estimator: Estimator | Callable,
    model_fn: Callable,
    guide_fn: Callable,
    args: Sequence[Any],
    groups: Mapping[str, Sequence[torch.Tensor]],
    *,
    num_samples: int,
    seed: int = 0,
    scale: float = 1.0,
    terms: bool = True,
    module: nn.Module | None = None,
    dtype: torch.dtype = torch.float64,
) -> VarianceResult:
    """K = ``num_samples`` draws of the gradient of ``estimator(model_fn, guide_fn, *args, scale=scale)``.

    ``groups`` maps a role (``guide/encoder``) to its parameters. ``module``, when given, has its buffers
    restored and its parameters left out of the param-store snapshot. ``terms=False`` skips the
    per-term breakdown (one extra backward pass per non-reparameterised site and draw).
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 to estimate a variance, got {num_samples}")
    params = _unique_params(groups)
    index = {id(p): i for i, p in enumerate(params)}
    group_index = {name: [index[id(p)] for p in group if id(p) in index] for name, group in groups.items()}
    group_moments = {name: _Moments(len(idx), dtype) for name, idx in group_index.items()}
    term_moments: dict[str, _Moments] = {}

    module_tensors = list(module.parameters()) if module is not None else []
    store = ParamStoreSnapshot(exclude=[*params, *module_tensors])
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()} if module is not None else {}
    grads_before = [p.grad for p in params]
    rng = get_rng_state()
    try:
        pyro.set_rng_seed(seed)
        with torch.enable_grad():
            for _ in range(num_samples):
                store.restore()
                out = estimator(model_fn, guide_fn, *args, scale=scale)
                sites = [
                    s for s, t in out.score_terms.items() if terms and torch.is_tensor(t) and t.requires_grad
                ]
                grads = torch.autograd.grad(
                    out.surrogate, params, retain_graph=bool(sites), allow_unused=True
                )
                for name, idx in group_index.items():
                    group_moments[name].add([grads[i] for i in idx])
                for j, site in enumerate(sites):
                    term_grads = torch.autograd.grad(
                        -out.score_terms[site], params, retain_graph=j < len(sites) - 1, allow_unused=True
                    )
                    term_moments.setdefault(site, _Moments(len(params), dtype)).add(term_grads)
                del out, grads
    finally:
        store.restore()
        if module is not None:
            with torch.no_grad():
                for name, b in module.named_buffers():
                    b.copy_(buffers[name])
        for p, g in zip(params, grads_before, strict=True):
            p.grad = g
        set_rng_state(rng)

    return VarianceResult(
        groups={name: m.stats() for name, m in group_moments.items() if m.used},
        terms={site: m.total_variance() for site, m in term_moments.items()},
        unused_groups=[name for name, m in group_moments.items() if not m.used],
    )
