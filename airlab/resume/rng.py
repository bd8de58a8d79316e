"""Every global random number generator a run draws from, as one checkpointable state.

Pyro samples from torch's generator; numpy's and Python's ``random`` are used by callbacks and
libraries. :func:`rng_state` captures all of them (CUDA's only once CUDA is in use), in plain types and
tensors only, so a checkpoint holding it still loads with ``torch.load(weights_only=True)``;
:func:`set_rng_state` puts them back; :func:`preserved_rng` runs a block (pictures, validation) without
moving any of them, so that a run with that block draws the same training noise as one without it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """The states of torch (CPU, and every CUDA device once CUDA is initialised), numpy and ``random``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch.cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured. CUDA states are restored when this process has as many
    devices as the saved run (a checkpoint moved between machines keeps its CPU streams only)."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state((saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    cuda = state.get("torch.cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block, then put every generator back where it was before the block."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
