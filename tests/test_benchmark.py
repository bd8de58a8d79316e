"""``scripts/benchmark.py``: the VAE against a bare Pyro loop, and AIR against Pyro's TraceGraph_ELBO."""

from __future__ import annotations

import json
from pathlib import Path

from airlab.tasks.benchmark import run_benchmark
from tests.conftest import TINY_AIR_MODEL

TINY_AIR = [
    "experiment=air_pyro_tutorial",
    "data.subset_size=64",
    "data.batch_size=16",
    *TINY_AIR_MODEL,
]


def test_benchmark_writes_the_air_fields(make_cfg):
    air_overrides = "[" + ",".join(f"'{o}'" for o in TINY_AIR) + "]"
    cfg = make_cfg(
        [
            "debug=fast",
            "data.source=bundled",
            "callbacks.progress_bar=null",
            "trainer.max_epochs=1",
            "benchmark.repeats=1",
            "benchmark.bare_loop=false",
            f"benchmark.air.overrides={air_overrides}",
            "benchmark.air.steps=4",
            "benchmark.air.repeats=1",
            f"benchmark.estimators.overrides={air_overrides}",
            "benchmark.estimators.arms=[tracegraph,enum_counts]",
            "benchmark.estimators.steps=2",
            "benchmark.estimators.repeats=1",
        ],
        name="benchmark",
    )
    result = run_benchmark(cfg)
    run_dir = Path(cfg.paths.output_dir)
    written = json.loads((run_dir / "benchmark.json").read_text())
    air = written["air"]
    for key in ("steps_per_s", "pyro_tracegraph_steps_per_s", "peak_rss_mb", "images_per_s"):
        assert air[key] > 0, key
    assert air["images_per_s"] == air["steps_per_s"] * 16
    assert [run["steps"] for run in air["runs"]["airlab"]] == [4]
    assert [run["steps"] for run in air["runs"]["pyro_tracegraph"]] == [4]
    assert air["speedup_vs_pyro_example"] == air["steps_per_s"] * 0.237
    assert result["air"]["steps_per_s"] == air["steps_per_s"]
    assert air["grad_variance_s"] > 0  # measured on its own: it fires after 2,000 steps
    assert air["callbacks_overhead_total"] == air["callbacks_overhead"] + air["grad_variance_overhead"]
    table = (run_dir / "benchmark.md").read_text()
    assert "AIR: Pyro TraceGraph_ELBO steps/s" in table and "AIR: peak RSS (MB)" in table
    estimators = written["estimators"]
    assert set(estimators["s_per_step"]) == {"tracegraph", "enum_counts"}
    assert estimators["relative_to_first"]["tracegraph"] == 1.0
    assert all(seconds > 0 for seconds in estimators["s_per_step"].values())
    assert "AIR step, enum_counts (s, x the first arm)" in table
