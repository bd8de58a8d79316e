"""The resumable training loader on its own: an epoch's order from (seed, epoch) alone, the position
saved mid-epoch and after a finished pass, and a resumed pass that skips the batches already served
without loading them."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from airlab.resume.loader import EpochSampler, ResumableLoader


class Counted(Dataset):
    """Items 0..n-1; remembers which were loaded."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        self.loaded.append(index)
        return index


def loader(data: Counted, seed: int = 0, batch_size: int = 3) -> ResumableLoader:
    return ResumableLoader(data, batch_size=batch_size, sampler=EpochSampler(data, seed))


def flat(batches) -> list[int]:
    return [int(i) for b in batches for i in b]


def test_an_epochs_order_depends_on_seed_and_epoch_only():
    data = Counted(10)
    sampler = EpochSampler(data, seed=5)
    torch.manual_seed(0)
    first = list(sampler)
    torch.manual_seed(99)  # the global generator plays no part
    assert list(sampler) == first and sorted(first) == list(range(10))
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(EpochSampler(data, seed=6)) != first


def test_a_pass_stopped_midway_resumes_after_the_batches_served():
    data = Counted(12)
    whole = flat(loader(data))
    interrupted = loader(data)
    iterator = iter(interrupted)
    served = [next(iterator), next(iterator)]
    state = interrupted.state_dict()
    assert state == {"epoch": 0, "batches": 2, "seed": 0}
    data.loaded.clear()
    resumed = loader(data)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert flat(served) + flat(rest) == whole  # the same epoch, continued
    assert sorted(data.loaded) == sorted(whole[6:])  # skipped batches were never loaded
    assert flat(resumed) == whole  # the next pass is whole again


def test_a_finished_pass_is_saved_as_the_start_of_the_next_epoch():
    data = Counted(6)
    done = loader(data)
    list(done)
    assert done.state_dict() == {"epoch": 1, "batches": 0, "seed": 0}
    resumed = loader(data, seed=123)  # the saved seed wins
    resumed.load_state_dict(done.state_dict())
    expected = loader(data)
    expected.sampler.set_epoch(1)
    assert flat(resumed) == flat(expected)


def test_an_epoch_limited_by_the_trainer_counts_as_finished_at_its_limit():
    data = Counted(12)
    limited = ResumableLoader(data, batch_size=3, sampler=EpochSampler(data, 0), epoch_batches=lambda: 2)
    iterator = iter(limited)
    next(iterator), next(iterator)
    assert limited.state_dict()["epoch"] == 1 and limited.state_dict()["batches"] == 0
