"""DDP on two CPU processes (gloo) through Lightning's DDP strategy (``trainer=ddp``): gradients are
averaged, so the ranks keep identical weights; one step equals one process's step on the concatenated
batch; a run makes one run directory and rank 0 alone writes ``metrics.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies.launchers import subprocess_script

import __main__
from airlab.training.ddp import child_command, install
from tests.conftest import run_script
from tests.training.test_ddp_equality import TOLERANCE, FixedNoise

LOCAL_BATCH = 4  # images per rank; the single process takes 2 * LOCAL_BATCH
DDP_ON_TWO_CPUS = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def train(cwd: Path, *overrides: str) -> None:
    """``scripts/train.py overrides`` from ``cwd``; it must succeed."""
    result = run_script("train.py", *overrides, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


class WeightDigest(pl.Callback):
    """Each rank writes the sum of every parameter and of the images it trained on."""

    def __init__(self) -> None:
        self.image_sum = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.image_sum += float(batch["image"].double().sum())

    def on_train_end(self, trainer, pl_module) -> None:
        weights = [float(p.detach().double().sum()) for p in pl_module.parameters()]
        path = Path(trainer.default_root_dir) / f"digest_rank{trainer.global_rank}.json"
        path.write_text(
            json.dumps({"weights": weights, "image_sum": self.image_sum, "step": trainer.global_step})
        )


@pytest.mark.slow
def test_ddp_ranks_see_different_data_and_keep_identical_weights(tmp_path):
    train(
        tmp_path,
        *DDP_ON_TWO_CPUS,
        "data.source=bundled",
        "data.subset_size=256",
        "data.batch_size=32",
        "trainer.max_steps=5",
        "trainer.max_epochs=5",
        "test=false",
        "callbacks.progress_bar=null",
        "+callbacks.digest._target_=tests.training.test_ddp.WeightDigest",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    digests = [json.loads((tmp_path / "run" / f"digest_rank{r}.json").read_text()) for r in (0, 1)]
    assert digests[0]["step"] == digests[1]["step"] == 5
    assert digests[0]["image_sum"] != pytest.approx(digests[1]["image_sum"])  # different shards
    assert torch.allclose(torch.tensor(digests[0]["weights"]), torch.tensor(digests[1]["weights"]), rtol=1e-6)


class FixedStep(pl.Callback):
    """Makes a rank's step a fixed slice of a fixed global batch, with fixed guide noise (see
    ``tests/training/test_ddp_equality.py``), and saves the parameters before and after and the gradients
    that the optimizer sees (after DDP's all-reduce) as ``step_rank<r>.pt`` in the run directory."""

    def __init__(self) -> None:
        self.record: dict[str, list[torch.Tensor]] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.noise = FixedNoise(offset=0)  # its offset is set with the batch
        pl_module.guide_fn = self.noise(pl_module.model.guide)
        self.record["before"] = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        local, shape = batch["image"].shape[0], batch["image"].shape[1:]
        images = torch.rand(local * trainer.world_size, *shape, generator=torch.Generator().manual_seed(3))
        batch["image"] = images[trainer.global_rank * local : (trainer.global_rank + 1) * local]
        self.noise.offset = trainer.global_rank * local

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.record["grads"] = [
            torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in pl_module.parameters()
        ]

    def on_train_end(self, trainer, pl_module) -> None:
        self.record["after"] = [p.detach().clone() for p in pl_module.parameters()]
        torch.save(self.record, Path(trainer.default_root_dir) / f"step_rank{trainer.global_rank}.pt")


FIXED_STEP = [
    "data.source=bundled",
    "data.subset_size=64",
    "model.scale_to_dataset=true",  # the N/B scale: N/(2*4) on each rank, N/8 in one process
    "seed=0",
    "trainer.max_steps=1",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=2",
    "test=false",
    "callbacks.progress_bar=null",
    "+callbacks.fixed_step._target_=tests.training.test_ddp.FixedStep",
]


@pytest.mark.slow
def test_lightning_ddp_step_equals_one_process_and_makes_one_run_directory(tmp_path):
    """``trainer=ddp`` on 2 CPU ranks of 4 images makes the step that one process makes on the 8 images
    (the VAE, ``trace``, N/B scale): the same gradients and parameters within 1e-5 on both ranks. The
    DDP run, started without ``hydra.run.dir``, makes one timestamped run directory, in which rank 0
    alone wrote ``metrics.json`` (and both ranks their records)."""
    train(tmp_path, *FIXED_STEP, *DDP_ON_TWO_CPUS, f"data.batch_size={LOCAL_BATCH}")
    run_dirs = [p for p in (tmp_path / "outputs" / "train").glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    assert (run_dir / "metrics.json").is_file()
    single_dir = tmp_path / "single"
    train(
        tmp_path,
        *FIXED_STEP,
        "trainer.accelerator=cpu",
        f"data.batch_size={2 * LOCAL_BATCH}",
        f"hydra.run.dir={single_dir}",
    )
    expected = torch.load(single_dir / "step_rank0.pt")
    for rank in (0, 1):
        got = torch.load(run_dir / f"step_rank{rank}.pt")
        for key in ("before", "grads", "after"):
            largest = max(float(t.abs().max()) for t in expected[key])
            difference = max(float((a - b).abs().max()) for a, b in zip(got[key], expected[key], strict=True))
            print(f"rank {rank} {key}: largest {largest:.3g}, difference {difference:.3g}")
            assert difference <= TOLERANCE * max(1.0, largest), (rank, key)


def test_ddp_children_run_this_job_in_its_run_directory(make_cfg, monkeypatch, tmp_path):
    """In a multirun job the processes DDP starts get the job's overrides and output directory, not
    ``-m`` and the sweep (with which each child would run the whole sweep again, elsewhere)."""
    make_cfg(["seed=3", "trainer=ddp"])
    monkeypatch.setattr(sys, "argv", ["scripts/train.py", "-m", "seed=3,4", "-cn", "train"])
    monkeypatch.setattr(__main__, "__spec__", None)
    command, cwd = child_command(local_rank=1)
    assert command[1].endswith("scripts/train.py") and command[2:4] == ["-cn", "train"]
    assert "-m" not in command and "seed=3,4" not in command
    assert command.index("seed=3") < command.index(f'hydra.run.dir="{tmp_path / "run"}"')
    assert command[-2].endswith("_ddp_process_1") and command[-1] == "hydra.output_subdir=null"
    assert cwd == str(tmp_path / "run")
    install()
    assert subprocess_script._hydra_subprocess_cmd is child_command


@pytest.mark.slow
def test_ddp_in_a_multirun_job_makes_one_job_directory(tmp_path):
    """``-m`` with ``trainer=ddp`` (one job, 2 CPU ranks): the sweep has one directory, its job one, in
    which rank 1 logged (``train_ddp_process_1.log``) and rank 0 alone wrote ``metrics.json``."""
    train(
        tmp_path,
        "-m",
        *DDP_ON_TWO_CPUS,
        "data.source=bundled",
        "data.subset_size=64",
        "data.batch_size=8",
        "trainer.max_steps=2",
        "trainer.max_epochs=1",
        "test=false",
        "callbacks.progress_bar=null",
        "seed=0",
    )
    outputs = tmp_path / "outputs" / "train"
    assert [p.name for p in outputs.iterdir()] == ["multirun"]
    sweeps = list((outputs / "multirun").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    assert jobs == ["0"], jobs
    job = sweeps[0] / "0"
    assert (job / "metrics.json").is_file() and (job / "train_ddp_process_1.log").is_file()
