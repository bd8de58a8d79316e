"""Throughput and memory of a training config, and the overhead of airlab over a bare Pyro loop.

The bare loop is what a Pyro user writes by hand: ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO)``
stepping over the same batches, evaluating the validation ELBO after every epoch. It runs the same
model class on the same data module, so the difference is the framework: Lightning, logging,
checkpoints, progress bar and pictures.

The AIR section (``benchmark.air``, :mod:`airlab.benchmarking.air_speed`) times the tutorial
configuration against its in-run reference, Pyro's AIR example's algorithm.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import pyro
import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from pyro.infer import SVI, Trace_ELBO

from airlab.benchmarking.air_speed import (
    air_report_rows,
    airlab_run,
    machine_info,
    own_peak_rss_mb,
    run_air_benchmark,
)
from airlab.benchmarking.step_costs import arm_step_seconds
from airlab.estimators import elbo_estimate
from airlab.training.build import build_datamodule, build_model, start_task

log = logging.getLogger(__name__)


def bare_svi_loop(cfg: DictConfig, epochs: int, seed: int) -> dict[str, Any]:
    """Pyro's SVI loop with the config's model, data and Adam settings; time excludes set-up."""
    start_task(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    model = build_model(cfg.model, datamodule).to(device)
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": cfg.optim.lr}), Trace_ELBO())
    steps, val_elbo = 0, float("nan")
    started = time.perf_counter()
    for _ in range(epochs):
        for batch in datamodule.train_dataloader():
            svi.step(batch["image"].to(device))
            steps += 1
        total, count = 0.0, 0
        for batch in datamodule.val_dataloader():
            images = batch["image"].to(device)
            total += float(elbo_estimate(model.model, model.guide, images))
            count += images.shape[0]
        val_elbo = total / count
    elapsed = time.perf_counter() - started
    return {"time_s": elapsed, "steps": steps, "steps_per_s": steps / elapsed, "val/elbo": val_elbo}


def compares_bare_loop(cfg: DictConfig) -> bool:
    """Whether to time the bare Pyro loop: asked for (``benchmark.bare_loop``) and declared possible by
    the model class (``GenerativeModel.supports_bare_trace_loop``), not guessed from ``_target_``."""
    return bool(cfg.benchmark.bare_loop) and get_class(cfg.model._target_).supports_bare_trace_loop


def run_benchmark(cfg: DictConfig) -> dict[str, Any]:
    """Time airlab (and, where comparable, Pyro's bare SVI loop) over ``benchmark.repeats`` runs;
    write ``benchmark.json`` and ``benchmark.md`` and return the medians."""
    bench = cfg.benchmark
    output_dir = Path(cfg.paths.output_dir)
    seed = 0 if cfg.get("seed") is None else int(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machine = machine_info(device)
    air = None
    if bench.get("air") and bench.air.enabled:
        air = run_air_benchmark(cfg, output_dir, seed, machine)
    estimators = None
    if bench.get("estimators") and bench.estimators.enabled:
        node = bench.estimators
        overrides = [*node.overrides, *([f"data.source={cfg.data.source}"] if cfg.data.get("source") else [])]
        estimators = arm_step_seconds(list(node.arms), overrides, int(node.steps), int(node.repeats), seed)
    epochs = int(cfg.trainer.max_epochs)
    compare = compares_bare_loop(cfg)
    runs: dict[str, list[dict[str, Any]]] = {"airlab": [], "bare_pyro": []}
    for repeat in range(int(bench.repeats)):
        # Alternate the two so that neither always runs on a colder or warmer process.
        if compare:
            runs["bare_pyro"].append(bare_svi_loop(cfg, epochs, seed))
            log.info("bare Pyro loop, repeat %d: %.2f s", repeat, runs["bare_pyro"][-1]["time_s"])
        runs["airlab"].append(airlab_run(cfg, output_dir / f"airlab_run{repeat}", seed))
        log.info("airlab, repeat %d: %.2f s", repeat, runs["airlab"][-1]["time_s"])

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in runs[name] if r.get(key) is not None]
        return statistics.median(values) if values else None

    result: dict[str, Any] = {
        "config": {
            "model": cfg.model._target_,
            "elbo": cfg.elbo._target_,
            "data.source": cfg.data.get("source"),
            "batch_size": cfg.data.batch_size,
            "max_epochs": epochs,
            "max_steps": cfg.trainer.max_steps,
            "repeats": int(bench.repeats),
            "seed": seed,
        },
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({torch.get_num_threads()} threads)",
        "machine": machine,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "runs": runs,
        "airlab_time_s": median("airlab", "time_s"),
        "airlab_fit_time_s": median("airlab", "fit_time_s"),
        "airlab_steps_per_s": median("airlab", "steps_per_s"),
        "airlab_val_elbo": median("airlab", "val/elbo"),
        "peak_rss_mb": own_peak_rss_mb(),
    }
    if air is not None:
        result["air"] = air
    if estimators is not None:
        result["estimators"] = estimators
    if torch.cuda.is_available():
        result["cuda_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if compare:
        result["bare_time_s"] = median("bare_pyro", "time_s")
        result["bare_val_elbo"] = median("bare_pyro", "val/elbo")
        result["overhead_ratio"] = result["airlab_time_s"] / result["bare_time_s"]
        result["fit_overhead_ratio"] = result["airlab_fit_time_s"] / result["bare_time_s"]
    write_report(result, output_dir)
    return result


def write_report(result: dict[str, Any], output_dir: Path) -> None:
    """Write ``result`` to ``benchmark.json`` and its main figures as a markdown table to ``benchmark.md``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "benchmark.json").write_text(json.dumps(result, indent=2))
    rows = [
        ("device", result["device"]),
        ("machine", "{cpu}, {cpu_count} cores, {torch_threads} torch threads".format(**result["machine"])),
        ("measured matrix-product rate (GFLOP/s, float32)", f"{result['machine']['matmul_gflops']:.0f}"),
        ("config", ", ".join(f"{k}={v}" for k, v in result["config"].items())),
        ("airlab training loop (s, median)", f"{result['airlab_time_s']:.2f}"),
        ("airlab trainer.fit incl. set-up/teardown (s, median)", f"{result['airlab_fit_time_s']:.2f}"),
        ("airlab steps/s", f"{result['airlab_steps_per_s']:.1f}"),
        ("airlab val/elbo", f"{result['airlab_val_elbo']:.2f}" if result["airlab_val_elbo"] else "-"),
        ("peak RSS (MB)", f"{result['peak_rss_mb']:.0f}"),
    ]
    if "bare_time_s" in result:
        rows += [
            ("bare Pyro loop time (s, median)", f"{result['bare_time_s']:.2f}"),
            ("bare Pyro loop val/elbo", f"{result['bare_val_elbo']:.2f}"),
            ("airlab loop / bare loop", f"{result['overhead_ratio']:.3f}"),
            ("airlab fit / bare loop", f"{result['fit_overhead_ratio']:.3f}"),
        ]
    if "air" in result:
        rows += air_report_rows(result["air"])
    for arm, seconds in result.get("estimators", {}).get("s_per_step", {}).items():
        relative = result["estimators"]["relative_to_first"][arm]
        rows.append((f"AIR step, {arm} (s, x the first arm)", f"{seconds:.3f} ({relative:.2f}x)"))
    if "cuda_peak_memory_mb" in result:
        rows.append(("CUDA peak memory (MB)", f"{result['cuda_peak_memory_mb']:.0f}"))
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
    (output_dir / "benchmark.md").write_text(table)
    log.info("benchmark:\n%s", table)
