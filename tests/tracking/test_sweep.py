"""Sweeps: summary.csv at the sweep root, and an Optuna search end to end (slow)."""

from __future__ import annotations

import csv
import json

import pytest

from airlab.tracking.sweep import summarise_sweep
from tests.conftest import run_script


def test_summary_has_one_row_per_job_with_overrides_and_metrics(tmp_path):
    for job, (z_dim, elbo) in enumerate([(10, -150.5), (50, -140.25)]):
        job_dir = tmp_path / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(f"- model.z_dim={z_dim}\n- seed=0\n")
        (job_dir / "metrics.json").write_text(json.dumps({"val/elbo": elbo, "global_step": 7}))
    (tmp_path / "2" / ".hydra").mkdir(parents=True)  # a job that died before metrics.json
    path = summarise_sweep(tmp_path)
    rows = list(csv.DictReader(path.open()))
    assert [r["job"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["overrides"] == "model.z_dim=10 seed=0" and float(rows[1]["val/elbo"]) == -140.25
    assert rows[2]["status"].startswith("no metrics.json")


@pytest.mark.slow
def test_optuna_search_runs_trials_and_writes_the_summary(tmp_path):
    result = run_script(
        "train.py",
        "-m",
        "hparams_search=vae_optuna",
        "debug=fast",
        "data.source=bundled",
        "callbacks.progress_bar=null",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "debug" / "multirun").iterdir()
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 3 and all(float(r["val/elbo"]) < 0 for r in rows)
    assert (sweep / "optimization_results.yaml").is_file()
