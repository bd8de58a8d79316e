"""A sweep folder as a Python object: a DataFrame of its jobs, and their metrics aggregated over seeds."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import airlab
from airlab.analysis.sweeps import load_sweep
from airlab.errors import ConfigError
from airlab.tracking.aggregate import STATISTICS
from airlab.tracking.sweep import BY_CONFIG_NAME, FAILED_NAME, summarise_sweep

ELBOS = [-101.0, -99.5, -97.0]
ACCURACIES = [0.5, 0.75, 0.625]


def fake_job(sweep: Path, job: int, overrides: list[str], metrics: dict | None) -> Path:
    folder = sweep / str(job)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """Three finished jobs, seed=0,1,2 of one configuration, and a failed fourth."""
    for seed in range(3):
        metrics = {"val/elbo": ELBOS[seed], "val/acc": ACCURACIES[seed], "seed": seed, "global_step": 6}
        fake_job(tmp_path, seed, [f"seed={seed}", "model.z_dim=10", "resume_sweep=true"], metrics)
    failed = fake_job(tmp_path, 3, ["seed=3", "model.z_dim=10"], None)
    (failed / FAILED_NAME).write_text("data: no MNIST\n")
    return tmp_path


def test_jobs_has_a_row_per_job_with_overrides_and_metrics(sweep_dir):
    jobs = airlab.load_sweep(sweep_dir).jobs
    assert list(jobs.columns) == [
        "job",
        "status",
        "seed",
        "model.z_dim",
        "global_step",
        "val/acc",
        "val/elbo",
    ]
    assert list(jobs.job) == [0, 1, 2, 3] and list(jobs.seed) == [0, 1, 2, 3]
    assert list(jobs.status) == ["finished"] * 3 + ["failed: data: no MNIST"]
    assert list(jobs["val/elbo"][:3]) == ELBOS and math.isnan(jobs["val/elbo"][3])


def test_aggregate_over_seed_is_one_row_per_configuration(sweep_dir):
    """The issue's acceptance: one row, n = 3, and a standard deviation."""
    table = load_sweep(sweep_dir).aggregate(over="seed")
    assert len(table) == 1 and list(table.index) == [10] and table.index.name == "model.z_dim"
    assert table["val/elbo"]["n"].iloc[0] == 3
    assert table["val/elbo"]["sd"].iloc[0] == pytest.approx(np.std(ELBOS, ddof=1))
    assert list(table.columns.get_level_values(0).unique()) == ["global_step", "val/acc", "val/elbo"]


def test_by_metric_gives_one_row_per_metric_with_the_t_interval(sweep_dir):
    table = load_sweep(sweep_dir).by_metric()
    assert list(table.columns) == ["model.z_dim", "metric", *STATISTICS]
    assert list(table.metric) == ["global_step", "val/acc", "val/elbo"] and list(table.n) == [3, 3, 3]
    assert set(table["model.z_dim"]) == {10}
    for metric, values in (("val/elbo", ELBOS), ("val/acc", ACCURACIES)):
        row = table[table.metric == metric].iloc[0]
        sd = np.std(values, ddof=1)
        se = sd / np.sqrt(3)
        half = stats.t.ppf(0.975, 2) * se
        assert row["mean"] == pytest.approx(np.mean(values)) and row["sd"] == pytest.approx(sd)
        assert row["se"] == pytest.approx(se)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            (np.mean(values) - half, np.mean(values) + half)
        )
        assert (row["min"], row["max"]) == (min(values), max(values))
    steps = table[table.metric == "global_step"].iloc[0]
    assert steps["sd"] == 0 and steps["ci_low"] == steps["ci_high"] == 6


def test_aggregate_matches_the_sweep_s_summary_by_config(sweep_dir):
    summarise_sweep(sweep_dir)
    with (sweep_dir / BY_CONFIG_NAME).open(newline="") as handle:
        written = list(csv.DictReader(handle))
    table = load_sweep(sweep_dir).by_metric()
    assert [r["metric"] for r in written] == list(table.metric)
    for row, (_, expected) in zip(written, table.iterrows(), strict=True):
        assert [float(row[k]) for k in STATISTICS] == pytest.approx([float(expected[k]) for k in STATISTICS])


def test_aggregate_over_another_override_and_a_single_job_has_nan_spread(sweep_dir):
    table = load_sweep(sweep_dir).by_metric(over="model.z_dim")
    assert list(table.columns) == ["seed", "metric", *STATISTICS]
    assert list(table[table.metric == "val/elbo"].seed) == [0, 1, 2] and set(table.n) == {1}
    assert table[["sd", "se", "ci_low", "ci_high"]].isna().all().all()


def test_a_sweep_job_is_a_run(sweep_dir):
    assert load_sweep(sweep_dir).run(1).metrics["val/elbo"] == ELBOS[1]


def test_a_folder_without_jobs_is_one_line_naming_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_sweep(tmp_path / "nowhere")
    assert str(err.value) == f"load_sweep: {tmp_path / 'nowhere'}: no such sweep folder"
    with pytest.raises(ConfigError, match="not a sweep folder"):
        load_sweep(tmp_path)
