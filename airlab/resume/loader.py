"""A training loader that resumes mid-epoch: Lightning's stateful-dataloader protocol.

Lightning saves ``state_dict()`` of every training loader that has one in the checkpoint (the fit
loop's ``combined_loader`` entry) and calls ``load_state_dict()`` before it iterates again on resume.
:class:`EpochSampler` shuffles from ``(seed, epoch)`` alone, without touching the global generators,
so the order of any epoch can be made again; :class:`ResumableLoader` counts the batches it handed out
this epoch and, after ``load_state_dict``, starts its next pass after the ones already trained on.
Skipped batches are never loaded: the skip happens on the indices.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, RandomSampler

from airlab.compat.torch_internals import IndexSamplerHook


class EpochSampler(RandomSampler):
    """A shuffled order of the dataset that depends on ``(seed, epoch)`` only.

    A ``RandomSampler`` subclass, so that under DDP Lightning still replaces it by a shuffling
    ``DistributedSampler`` (itself seeded by the run's seed and the epoch).
    """

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next pass yields (Lightning calls this at each epoch's start)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        """A permutation of the indices, the same for the same ``(seed, epoch)``."""
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class _SkipFirstPass:
    """A batch sampler whose first pass leaves out its first ``skip`` batches; later passes are whole
    (a persistent-workers iterator reuses its index sampler for the following epochs)."""

    def __init__(self, batches: Iterable[Any], skip: int) -> None:
        self.batches = batches
        self.skip = skip

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.batches), skip, None)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


class ResumableLoader(IndexSamplerHook):
    """A ``DataLoader`` with ``state_dict``/``load_state_dict``: the epoch and the batches served in it.

    Under DDP Lightning swaps the :class:`EpochSampler` for a ``DistributedSampler``, whose epoch and
    seed are saved the same way. ``epoch_batches`` gives the batches an epoch takes when the trainer limits it
    (``limit_train_batches``); by default the loader's length.
    """

    def __init__(self, *args: Any, epoch_batches: Callable[[], float | None] | None = None, **kwargs: Any):
        self.epoch_batches = epoch_batches
        self._served = 0  # batches handed out by the current pass
        self._skip = 0  # batches the next pass leaves out (set by load_state_dict)
        self._skipping = 0  # read by wrap_index_sampler while the next pass's iterator is made
        super().__init__(*args, **kwargs)

    def wrap_index_sampler(self, sampler: Any) -> Any:
        """While the next pass's iterator is made: ``sampler`` less the batches already served."""
        return _SkipFirstPass(sampler, self._skipping) if self._skipping else sampler

    def __iter__(self) -> Iterator[Any]:
        """A pass over the data, after the batches that ``load_state_dict`` said were consumed."""
        skip, self._skip = self._skip, 0
        self._skipping = skip
        try:
            iterator = super().__iter__()
        finally:
            self._skipping = 0
        self._served = skip
        return self._counted(iterator)

    def _counted(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self._served += 1
            yield batch

    def _epoch_length(self) -> float:
        limit = self.epoch_batches() if self.epoch_batches is not None else None
        return len(self) if limit is None else min(len(self), limit)

    def state_dict(self) -> dict[str, Any]:
        """Where the current pass stands: its epoch and the batches served (a finished pass is saved
        as the start of the next epoch)."""
        sampler = self.sampler if isinstance(self.sampler, EpochSampler | DistributedSampler) else None
        epoch = 0 if sampler is None else sampler.epoch
        finished = self._served >= self._epoch_length()
        return {
            "epoch": epoch + 1 if finished else epoch,
            "batches": 0 if finished else self._served,
            "seed": None if sampler is None else sampler.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass the saved epoch's order (and seed), less the batches already served."""
        if state.get("seed") is not None and isinstance(self.sampler, EpochSampler | DistributedSampler):
            self.sampler.seed = state["seed"]
        # Lightning calls set_epoch on the sampler and the batch sampler that have one: these two.
        for sampler in (self.sampler, self.batch_sampler):
            if isinstance(sampler, EpochSampler | DistributedSampler):
                sampler.set_epoch(state["epoch"])
        self._skip = int(state["batches"])
