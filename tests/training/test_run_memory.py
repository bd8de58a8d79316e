"""Memory stays flat over a long CPU run (slow): resident memory is sampled every 50 steps.

Tolerance: after a warm-up of 100 steps (allocator pools, the first validation, the first
checkpoint), RSS may move by at most 40 MB over the rest of the run. A leak of one small tensor per
step (Pyro's param-store reverse map under decaying-average baselines) would not show in so few steps
by itself, so the param store's size is checked too: it must not change after the warm-up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyro
import pytest
import pytorch_lightning as pl

from airlab.training.run import train
from tests.conftest import FAST
from tests.training.test_run_air import SMALL_AIR

WARMUP_STEPS = 100
TOLERANCE_MB = 40.0


def rss_mb() -> float:
    """This process's resident memory now, MB (Linux ``/proc``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class MemorySampler(pl.Callback):
    """RSS and the param store's entry counts every ``every`` steps, written to memory.json."""

    def __init__(self, every: int = 50) -> None:
        self.every = every
        self.samples: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every == 0:
            store = pyro.get_param_store()
            self.samples.append(
                {
                    "step": step,
                    "rss_mb": rss_mb(),
                    "params": len(store._params),
                    "names": len(store._param_to_name),
                }
            )
            Path(trainer.default_root_dir, "memory.json").write_text(json.dumps(self.samples))


def assert_flat(run_dir: str) -> None:
    samples = json.loads(Path(run_dir, "memory.json").read_text())
    late = [s for s in samples if s["step"] >= WARMUP_STEPS]
    assert len(late) >= 6, samples
    rss = [s["rss_mb"] for s in late]
    assert max(rss) - rss[0] < TOLERANCE_MB, rss
    assert {(s["params"], s["names"]) for s in late} == {(late[0]["params"], late[0]["names"])}, late


SAMPLER = "+callbacks.memory._target_=tests.training.test_run_memory.MemorySampler"


@pytest.mark.slow
def test_vae_memory_is_flat_over_a_long_run(make_cfg):
    cfg = make_cfg([*FAST, SAMPLER, "trainer.max_steps=800", "trainer.max_epochs=1000", "seed=0"])
    train(cfg)
    assert_flat(cfg.paths.output_dir)


@pytest.mark.slow
def test_air_memory_is_flat_over_a_long_run_with_decaying_averages(make_cfg):
    overrides = [*FAST, *SMALL_AIR, SAMPLER, "model.baseline=decaying_avg", "seed=0"]
    cfg = make_cfg([*overrides, "trainer.max_steps=500", "trainer.max_epochs=1000"])
    train(cfg)
    assert_flat(cfg.paths.output_dir)
