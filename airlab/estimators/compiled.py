"""``jit_trace`` and ``jit_tracegraph``: the eager surrogates compiled once with ``torch.jit.trace``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pyro
import pyro.ops.jit
import torch

from airlab.contracts.estimator import LossOutput
from airlab.estimators.elbo import TraceEstimator, TraceGraphEstimator


def callable_key(fn: Callable) -> tuple:
    """What identifies a function across calls: ``obj.method`` makes a new bound-method object at every
    attribute access, so its identity is the (object, function) pair, not ``id(fn)``."""
    if inspect.ismethod(fn):
        return (id(fn.__self__), fn.__func__)
    return (id(fn),)


class _Compiled:
    """Compiles an estimator's eager surrogate with ``pyro.ops.jit.trace``, once per (model, guide,
    scale). Arguments are traced by count, so the batch size must stay fixed (the training loader
    drops its ragged last batch).

    airlab compiles its own surrogates rather than calling Pyro's ``JitTrace_ELBO``: under torch 2.14
    the latter's traced graph counts each ``log_prob_sum`` twice in the backward pass (it feeds both
    the loss and the surrogate), doubling the model's gradients;
    tests/estimators/test_elbo_unbiasedness.py checks it.
    """

    name = "compiled"
    compiled = True

    def __init__(self, *args: Any, ignore_jit_warnings: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ignore_jit_warnings = ignore_jit_warnings
        self._compiled: dict[tuple, pyro.ops.jit.CompiledFunction] = {}
        self._has_baseline_loss: dict[tuple, bool] = {}

    def __call__(self, model: Callable, guide: Callable, *args: Any, scale: float = 1.0) -> LossOutput:
        key = (callable_key(model), callable_key(guide), scale)
        if key not in self._compiled:
            eager = super().__call__

            def loss_parts(*inner_args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    supports_decaying_avg_baseline = False  # the running mean is outside the compiled graph
