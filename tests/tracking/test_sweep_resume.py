"""Sweeps that survive a kill: summary.csv after every job, ``resume_sweep=true``, submitit_local."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from airlab.resume.checkpoint import resolve_checkpoint
from airlab.tracking.sweep import SweepSummary, finished_job_metrics, summarise_sweep
from airlab.training.run import study_job, train
from tests.conftest import FAST, REPO_ROOT, compose_config, run_script

# Three jobs of a few steps each; a checkpoint after every step, so a killed job leaves last.ckpt.
SWEEP = [
    "-m",
    *FAST,
    "trainer.max_steps=6",
    "callbacks.model_checkpoint.every_n_epochs=null",
    "callbacks.model_checkpoint.every_n_train_steps=1",
    "seed=0,1,2",
]


def rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def sweep_job_config(tmp_path: Path, job: int, overrides: list[str], config_name: str = "train") -> object:
    """A composed config (``train`` or ``study``) as multirun job ``job`` of the sweep at ``tmp_path/sweep``
    sees it."""
    job_dir = tmp_path / "sweep" / str(job)
    job_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_config(config_name, [f"paths.root_dir={tmp_path}", *overrides], output_dir=None)
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
        hydra_cfg.sweep.dir = str(tmp_path / "sweep")
        hydra_cfg.job.num = job
        hydra_cfg.runtime.output_dir = str(job_dir)
    with open_dict(cfg):
        cfg.paths.output_dir = str(job_dir)
    return cfg


def test_a_finished_job_is_skipped_with_its_metric_and_an_unfinished_one_resumes_its_checkpoint(tmp_path):
    cfg = sweep_job_config(tmp_path, 0, ["resume_sweep=true", "seed=0"])
    assert finished_job_metrics(cfg) is None and resolve_checkpoint(cfg) is None  # nothing ran before
    (tmp_path / "sweep" / "0" / "checkpoints").mkdir()
    (tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resolve_checkpoint(cfg) == str(tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt")
    (tmp_path / "sweep" / "0" / "metrics.json").write_text(json.dumps({"val/elbo": -99.5}))
    assert train(cfg) == -99.5  # skipped: no training, the sweeper still gets its metric
    # A summary row with other overrides (an Optuna trial that drew other values): trained again.
    (tmp_path / "sweep" / "summary.csv").write_text("job,overrides\n0,seed=7\n")
    assert finished_job_metrics(cfg) is None
    (tmp_path / "sweep" / "summary.csv").write_text(f"job,overrides\n0,paths.root_dir={tmp_path} seed=0\n")
    assert finished_job_metrics(cfg) == {"val/elbo": -99.5}
    # Without resume_sweep nothing is skipped and ckpt_path stays the user's.
    cfg = sweep_job_config(tmp_path, 0, ["seed=0"])
    assert finished_job_metrics(cfg) is None and resolve_checkpoint(cfg) is None


def test_a_finished_study_job_is_skipped_and_keeps_its_metrics(tmp_path, monkeypatch):
    # A study job whose budget was spent would otherwise be restored from last.ckpt, fit zero steps and
    # overwrite its metrics.json without the validation metrics.
    cfg = sweep_job_config(tmp_path, 0, ["resume_sweep=true", "seed=0"], config_name="study")
    job_dir = tmp_path / "sweep" / "0"
    (job_dir / "checkpoints").mkdir()
    (job_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    finished = {"val/count_accuracy": 0.955, "val/elbo": -99.5, "global_step": 7956}
    (job_dir / "metrics.json").write_text(json.dumps(finished))

    def no_training(_cfg):
        raise AssertionError("a finished study job was trained again")

    monkeypatch.setattr("airlab.training.run.run_training", no_training)
    assert study_job(cfg) == -99.5
    assert json.loads((job_dir / "metrics.json").read_text()) == finished


def test_summary_keeps_rows_of_jobs_whose_directory_is_gone_and_drops_resume_sweep(tmp_path):
    (tmp_path / "summary.csv").write_text("job,overrides,val/elbo\n0,seed=0,-5.0\n")
    (tmp_path / "1" / ".hydra").mkdir(parents=True)
    (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text("- seed=1\n- resume_sweep=true\n")
    (tmp_path / "1" / "metrics.json").write_text(json.dumps({"val/elbo": -6.0}))
    table = rows(summarise_sweep(tmp_path).parent)
    assert [(r["job"], r["overrides"], r["val/elbo"]) for r in table] == [
        ("0", "seed=0", "-5.0"),
        ("1", "seed=1", "-6.0"),
    ]


def test_every_multirun_job_end_rewrites_the_summary_and_a_single_run_does_not(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text(json.dumps({"val/elbo": -1.0}))
    single = OmegaConf.create({"hydra": {"mode": RunMode.RUN, "sweep": {"dir": str(tmp_path)}}})
    SweepSummary().on_job_end(single, job_return=None)
    assert not (tmp_path / "summary.csv").exists()
    multirun = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}}})
    SweepSummary().on_job_end(multirun, job_return=None)  # in the job's process with submitit
    assert [r["val/elbo"] for r in rows(tmp_path)] == ["-1.0"]


@pytest.mark.slow
def test_a_killed_sweep_keeps_its_rows_and_resumes_only_the_unfinished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), *SWEEP, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(tmp_path / "first.log", "w") as out:
        process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        # Killed (SIGKILL: nothing is saved on the way out) once the second job has its first checkpoint.
        while not (sweep / "1" / "checkpoints" / "last.ckpt").is_file():
            running = process.poll() is None and time.monotonic() < deadline
            assert running, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.02)
        process.kill()
        process.wait()
    assert not (sweep / "1" / "metrics.json").exists(), "the second job finished before the kill"
    killed = rows(sweep)
    assert [r["job"] for r in killed] == ["0"] and float(killed[0]["test/elbo"]) < 0
    first_metrics = (sweep / "0" / "metrics.json").stat().st_mtime_ns

    result = subprocess.run(
        [*args, "resume_sweep=true"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert log.count("training VAE") == 2  # jobs 1 and 2 trained, job 0 did not
    assert "resume_sweep: job 0 finished before; skipped" in log
    assert f"resume_sweep: resuming this job from {sweep / '1' / 'checkpoints' / 'last.ckpt'}" in log
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == first_metrics
    table = rows(sweep)
    assert [r["job"] for r in table] == ["0", "1", "2"]
    assert [r["seed"] for r in table] == ["0", "1", "2"] and all(r["global_step"] == "6" for r in table)
    assert all("resume_sweep" not in r["overrides"] for r in table)


@pytest.mark.slow
def test_submitit_local_runs_two_jobs_and_writes_the_summary(tmp_path):
    result = run_script(
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        *FAST,
        "trainer.max_steps=2",
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = rows(tmp_path / "sweep")
    assert [r["job"] for r in table] == ["0", "1"]
    assert [r["seed"] for r in table] == ["0", "1"] and all(float(r["test/elbo"]) < 0 for r in table)
