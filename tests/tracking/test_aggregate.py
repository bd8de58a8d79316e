"""Aggregating a sweep's jobs per configuration: override values, statistics, the t-interval, the table."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import stats

from airlab.tracking.aggregate import (
    STATISTICS,
    aggregate_jobs,
    aggregate_rows,
    describe,
    markdown_table,
    numeric,
    override_values,
    t_quantile,
)


def test_override_values_are_typed_as_hydra_parses_them():
    values = override_values(["seed=0", "+model.beta=2.5", "optim.lr=1e-3", "model=air", "~foo", "h=[16,8]"])
    assert values == {
        "seed": 0,
        "model.beta": 2.5,
        "optim.lr": 0.001,
        "model": "air",
        "foo": None,
        "h": "[16,8]",
    }
    assert isinstance(values["seed"], int)


def test_numeric_takes_numbers_and_their_text_only():
    assert [numeric(v) for v in (1, 2.5, "-3.25", "", "abc", None, True, float("nan"), [1])] == [
        1.0,
        2.5,
        -3.25,
        None,
        None,
        None,
        None,
        None,
        None,
    ]


def test_describe_matches_numpy_and_the_t_interval():
    values = [-101.5, -99.0, -100.25, -98.0]
    found = describe(values)
    assert list(found) == list(STATISTICS) and found["n"] == 4
    sd = np.std(values, ddof=1)
    assert found["mean"] == pytest.approx(np.mean(values)) and found["sd"] == pytest.approx(sd)
    assert found["se"] == pytest.approx(sd / 2)
    half = stats.t.ppf(0.975, 3) * sd / 2
    assert (found["ci_low"], found["ci_high"]) == pytest.approx(
        (np.mean(values) - half, np.mean(values) + half)
    )
    assert (found["min"], found["max"]) == (-101.5, -98.0)
    wider = describe(values, confidence=0.99)
    assert wider["ci_high"] - wider["ci_low"] > found["ci_high"] - found["ci_low"]


def test_one_value_has_no_spread():
    found = describe([3.0])
    assert found["n"] == 1 and found["mean"] == found["min"] == found["max"] == 3.0
    assert all(math.isnan(found[k]) for k in ("sd", "se", "ci_low", "ci_high"))


def test_t_quantile_without_scipy_is_close_to_scipy(monkeypatch):
    expected = {df: stats.t.ppf(0.975, df) for df in (*range(1, 41), 60, 120, 1000)}
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import scipy.stats now raises ImportError
    for df, value in expected.items():
        assert t_quantile(0.975, df) == pytest.approx(value, abs=2e-4), df
    with pytest.raises(ValueError, match="needs scipy"):
        t_quantile(0.995, 3)


def test_rows_group_by_configuration_in_order_and_skip_missing_metrics():
    rows = [
        {"lr": 0.1, "seed": 0, "elbo": -10.0, "acc": 0.5},
        {"lr": 0.01, "seed": 0, "elbo": -20.0},
        {"lr": 0.1, "seed": 1, "elbo": -12.0, "acc": "0.7"},
        {"lr": 0.01, "seed": 1, "elbo": "", "acc": None},
    ]
    table = aggregate_rows(rows, by=["lr"], metrics=["elbo", "acc"])
    assert [(r["lr"], r["metric"], r["n"]) for r in table] == [
        (0.1, "elbo", 2),
        (0.1, "acc", 2),
        (0.01, "elbo", 1),
    ]
    assert table[1]["mean"] == pytest.approx(0.6)


def test_jobs_are_aggregated_over_seed_with_every_numeric_metric():
    jobs = [
        ({"seed": s, "model.z_dim": 10, "resume_sweep": True}, {"val/elbo": v, "seed": s, "note": "x"})
        for s, v in enumerate([-3.0, -2.0, -1.0])
    ]
    by, table = aggregate_jobs(jobs, over="seed", exclude=("resume_sweep",))
    assert by == ["model.z_dim"]
    assert [(r["model.z_dim"], r["metric"], r["n"], r["mean"]) for r in table] == [(10, "val/elbo", 3, -2.0)]


def test_markdown_table_has_a_row_per_configuration_and_metric():
    table = aggregate_rows([{"lr": 0.1, "elbo": -10.0}, {"lr": 0.1, "elbo": -12.0}], ["lr"], ["elbo"])
    text = markdown_table(table, ["lr"])
    lines = text.splitlines()
    assert lines[0] == "| lr | metric | n | mean | sd | se | 95% CI | min | max |"
    assert lines[2].startswith("| 0.1 | elbo | 2 | -11 | 1.41421 | 1 | [-23.7062, 1.7062] | -12 | -10 |")
    single = markdown_table(aggregate_rows([{"lr": 1, "elbo": 1.0}], ["lr"], ["elbo"]), ["lr"])
    assert "| 1 | elbo | 1 | 1 | – | – | [–, –] | 1 | 1 |" in single
