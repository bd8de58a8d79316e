"""The throughput monitor's clock: ``throughput/elapsed_s`` goes on across a resume."""

from __future__ import annotations

import io
from types import SimpleNamespace

import torch

from airlab.callbacks import throughput
from airlab.callbacks.throughput import ThroughputMonitor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.logged.append((metrics, step))


def test_elapsed_time_goes_on_from_the_checkpoint(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    first = ThroughputMonitor()
    first.on_train_start(None, None)
    clock.now += 300.0
    saved = first.state_dict()
    assert saved == {"elapsed_s": 300.0}
    # The checkpoint stays loadable without unpickling code.
    buffer = io.BytesIO()
    torch.save({"callbacks": {"ThroughputMonitor": saved}}, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)["callbacks"]["ThroughputMonitor"]

    clock.now += 5000.0  # the days between the kill and the resume are not training time
    second = ThroughputMonitor()
    second.load_state_dict(restored)
    second.on_train_start(None, None)
    clock.now += 20.0
    logger = Recorder()
    trainer = SimpleNamespace(sanity_checking=False, loggers=[logger], global_step=4500)
    second.on_validation_epoch_end(trainer, None)
    assert logger.logged == [({"throughput/elapsed_s": 320.0}, 4500)]
    assert second.state_dict() == {"elapsed_s": 320.0}
    # Before training starts, a checkpoint keeps what the resumed fit brought.
    assert ThroughputMonitor().state_dict() == {"elapsed_s": 0.0}
