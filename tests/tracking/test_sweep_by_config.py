"""Every summary of a sweep also writes summary_by_config.csv and summary.md: its metrics over seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from airlab.tracking.sweep import BY_CONFIG_NAME, MARKDOWN_NAME, summarise_sweep


def fake_job(sweep: Path, job: int, overrides: list[str], metrics: dict | None) -> None:
    """A job folder as a multirun leaves it: ``.hydra/overrides.yaml`` and, when it finished, metrics.json."""
    (sweep / str(job) / ".hydra").mkdir(parents=True)
    (sweep / str(job) / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (sweep / str(job) / "metrics.json").write_text(json.dumps(metrics))


def test_summary_by_config_has_each_configuration_s_statistics_over_seeds(tmp_path):
    elbos = [-101.0, -99.5, -97.0]
    for seed, elbo in enumerate(elbos):
        fake_job(tmp_path, seed, [f"seed={seed}", "model.z_dim=10"], {"val/elbo": elbo, "seed": seed})
    fake_job(tmp_path, 3, ["seed=0", "model.z_dim=50"], {"val/elbo": -120.0, "seed": 0})
    fake_job(tmp_path, 4, ["seed=1", "model.z_dim=50", "resume_sweep=true"], None)  # still running
    summarise_sweep(tmp_path)
    with (tmp_path / BY_CONFIG_NAME).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model.z_dim"], r["metric"], r["n"]) for r in rows] == [
        ("10", "val/elbo", "3"),
        ("50", "val/elbo", "1"),
    ]
    sd = np.std(elbos, ddof=1)
    half = stats.t.ppf(0.975, 2) * sd / np.sqrt(3)
    assert float(rows[0]["sd"]) == pytest.approx(sd)
    assert float(rows[0]["ci_low"]) == pytest.approx(np.mean(elbos) - half)
    assert rows[1]["sd"] == "nan"
    text = (tmp_path / MARKDOWN_NAME).read_text()
    assert text.startswith(f"# {tmp_path.name}: 4 finished jobs, metrics over seed")
    assert "| model.z_dim | metric | n | mean |" in text and "| 10 | val/elbo | 3 | -99.1667 |" in text
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left


def test_a_sweep_without_finished_jobs_has_empty_tables(tmp_path):
    fake_job(tmp_path, 0, ["seed=0"], None)
    summarise_sweep(tmp_path)
    assert (tmp_path / BY_CONFIG_NAME).read_text().strip() == "metric,n,mean,sd,se,ci_low,ci_high,min,max"
    assert "No finished job yet." in (tmp_path / MARKDOWN_NAME).read_text()


def test_rows_of_jobs_whose_folder_is_gone_still_count(tmp_path):
    (tmp_path / "summary.csv").write_text("job,overrides,val/elbo,seed,status\n0,seed=0 lr=0.1,-5.0,0,\n")
    fake_job(tmp_path, 1, ["seed=1", "lr=0.1"], {"val/elbo": -7.0, "seed": 1})
    summarise_sweep(tmp_path)
    with (tmp_path / BY_CONFIG_NAME).open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["lr"], row["n"], float(row["mean"])) == ("0.1", "2", -6.0)
