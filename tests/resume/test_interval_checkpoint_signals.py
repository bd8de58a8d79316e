"""Signals and crashes: SIGTERM saves last.ckpt and exits with 143 and no traceback; after SIGKILL,
``ckpt_path=last`` resumes having lost at most ``every_n_train_steps`` steps. One subprocess each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch

from airlab.training.run import EXIT_SIGTERM, train
from tests.conftest import FAST, REPO_ROOT
from tests.resume.test_training_state import PROBE, probe


class StepFile(pl.Callback):
    """Writes the global step to ``step.txt`` in the run directory after every training step."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        (Path(trainer.default_root_dir) / "step.txt").write_text(str(trainer.global_step))


SMALL = [
    *FAST,
    "seed=0",
    "model.hidden_dim=32",
    "callbacks.grad_variance.every_n_steps=0",
    "trainer.max_epochs=100000",
]
ENDLESS = [
    *SMALL,
    "trainer.max_steps=100000",
    "+callbacks.step_file._target_=tests.resume.test_interval_checkpoint_signals.StepFile",
]


def start_training(log_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "train.py"),
            *ENDLESS,
            f"paths.log_dir={log_dir}",
            *overrides,
        ],
        cwd=log_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def wait_until(
    process: subprocess.Popen, log_dir: Path, ready: Callable[[Path, int], bool]
) -> tuple[Path, int]:
    """Poll the run directory until ``ready(run_dir, step)``; returns them (fails if the run ends first)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        for step_file in log_dir.glob("debug/*/*/step.txt"):
            text = step_file.read_text()
            if text and ready(step_file.parent, int(text)):
                return step_file.parent, int(text)
        time.sleep(0.2)
    raise AssertionError("the run did not get there in time")


def ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def test_sigterm_saves_last_ckpt_and_exits_143_without_traceback(tmp_path):
    log_dir = tmp_path / "out"
    process = start_training(log_dir, "callbacks.model_checkpoint.every_n_epochs=2")  # 3 steps an epoch
    try:
        run_dir, _ = wait_until(
            process, log_dir, lambda d, step: step >= 8 and (d / "checkpoints/last.ckpt").exists()
        )
        interval_step = ckpt_step(run_dir / "checkpoints" / "last.ckpt")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == EXIT_SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    step = ckpt_step(last)
    assert step > interval_step and step >= 8
    log = (run_dir / "train.log").read_text()
    assert f"interrupted by SIGTERM at step {step}: saved {last}; resume with ckpt_path=last" in log, log[
        -2000:
    ]
    assert "stopped by SIGTERM: exit code 143" in log


def test_after_sigkill_ckpt_path_last_resumes_losing_at_most_every_n_train_steps(tmp_path, make_cfg):
    every = 4
    log_dir = tmp_path / "out"
    steps = [
        "callbacks.model_checkpoint.every_n_epochs=null",
        f"callbacks.model_checkpoint.every_n_train_steps={every}",
    ]
    process = start_training(log_dir, *steps)
    try:
        run_dir, _ = wait_until(process, log_dir, lambda d, step: (d / "checkpoints/last.ckpt").exists())
        process.kill()  # SIGKILL: no handler runs
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    killed_at = int((run_dir / "step.txt").read_text())
    assert killed_at >= every
    max_steps = killed_at + 3
    cfg = make_cfg(
        [
            *SMALL,
            *steps,
            f"paths.log_dir={log_dir}",
            "ckpt_path=last",
            f"trainer.max_steps={max_steps}",
            PROBE,
        ],
        run="out/debug/resumed/run",
    )
    train(cfg)
    started = probe(cfg)["start_step"]
    assert killed_at - every <= started <= killed_at
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["global_step"] == max_steps
