"""Throughput and memory of a training config, and the overhead of airlab over a bare Pyro loop.

The bare loop is what a Pyro user writes by hand: ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO)``
stepping over the same batches, evaluating the validation ELBO after every epoch. It runs the same
model class on the same data module, so the difference is the framework: Lightning, logging,
checkpoints, progress bar and pictures.

The AIR section (``benchmark.air``) times the tutorial configuration two ways in the same process:
airlab's training task (the fast step: declared dependencies, default callbacks, and once more with
``callbacks=none``) and Pyro's own ``TraceGraph_ELBO`` in a bare ``SVI`` loop on the same model class
and batches, as Pyro's AIR example runs it.
"""

from __future__ import annotations

import json
import logging
import resource
import statistics
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import pyro
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO

from airlab.build import build_datamodule, build_model, build_module, start_task
from airlab.config.compose import compose_config
from airlab.estimators import elbo_estimate
from airlab.step_costs import arm_step_seconds
from airlab.training import run_training

log = logging.getLogger(__name__)

# The monitor that times a run whose config has none (callbacks=none): the loop time is what we measure.
THROUGHPUT_MONITOR = {"_target_": "airlab.callbacks.throughput.ThroughputMonitor"}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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


def airlab_run(cfg: DictConfig, run_dir: Path, seed: int) -> dict[str, Any]:
    """One training run (:func:`airlab.training.run_training`). ``time_s`` is the training loop, from
    Lightning's ``on_train_start`` to the last epoch's end (the bare loop's scope: start-up excluded);
    ``fit_time_s`` adds the Trainer's set-up and teardown. The loop is timed by the throughput monitor,
    added when the config has none (``callbacks=none``)."""
    run_cfg = deepcopy(cfg)
    with open_dict(run_cfg):
        run_cfg.seed = seed
        run_cfg.paths.output_dir = str(run_dir)
        run_cfg.pop("benchmark", None)
        callbacks = run_cfg.get("callbacks") or {}
        if not callbacks.get("throughput"):
            # callbacks=none keeps a preset's settings of the removed entries (no _target_): drop them
            kept = {k: v for k, v in callbacks.items() if v is not None and "_target_" in v}
            run_cfg.callbacks = {**kept, "throughput": THROUGHPUT_MONITOR}
    for node in (run_cfg.get("callbacks") or {}).values():
        if node is not None and "dirpath" in node:
            node.dirpath = str(run_dir / "checkpoints")
    for node in (run_cfg.get("logger") or {}).values():
        if node is not None and "save_dir" in node:
            node.save_dir = str(run_dir)
    metrics = run_training(run_cfg)
    loop_time_s = metrics["throughput/loop_time_s"]
    return {
        "time_s": loop_time_s,
        "fit_time_s": metrics["fit_time_s"],
        "steps": metrics["global_step"],
        "steps_per_s": metrics["global_step"] / loop_time_s,
        "val/elbo": metrics.get("val/elbo"),
        "val/count_accuracy": metrics.get("val/count_accuracy"),
    }


def pyro_tracegraph_loop(cfg: DictConfig, steps: int, seed: int) -> dict[str, Any]:
    """``SVI(..., TraceGraph_ELBO())`` on the config's model and batches, as in Pyro's AIR example: the
    data plate scaled to the training set, baselines at ``optim.baseline_lr``. Times ``steps`` steps,
    data loading included, like the training task's loop time."""
    start_task(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    model = build_model(cfg.model, datamodule).to(device)
    lr, baseline_lr = float(cfg.optim.lr), cfg.optim.get("baseline_lr")

    def per_param(module_name: str, param_name: str) -> dict[str, float]:
        return {"lr": float(baseline_lr) if baseline_lr and module_name == "baseline" else lr}

    scale = datamodule.num_train / int(cfg.data.batch_size)
    svi = SVI(
        poutine.scale(model.model, scale),
        poutine.scale(model.guide, scale),
        pyro.optim.Adam(per_param),
        TraceGraph_ELBO(),
    )
    done = 0
    started = time.perf_counter()
    while done < steps:
        for batch in datamodule.train_dataloader():
            svi.step(batch["image"].to(device))
            done += 1
            if done == steps:
                break
    elapsed = time.perf_counter() - started
    return {"time_s": elapsed, "steps": done, "steps_per_s": done / elapsed}


def grad_variance_seconds(cfg: DictConfig, seed: int) -> float | None:
    """The time of one measurement of the config's gradient-variance monitor on a training batch (the
    second of two: the first pays one-off set-up). ``None`` when the monitor is off."""
    node = (cfg.get("callbacks") or {}).get("grad_variance")
    if not node or "_target_" not in node or int(node.every_n_steps) <= 0:
        return None
    start_task(seed)
    monitor = instantiate(node)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    module.train()
    inputs = module.model.batch_inputs(next(iter(datamodule.train_dataloader())))
    for _ in range(2):
        monitor.measure(module, inputs, step=int(node.every_n_steps))
    return monitor.last_seconds


def run_air_benchmark(cfg: DictConfig, output_dir: Path, seed: int) -> dict[str, Any]:
    """steps/s, images/s and peak RSS of AIR's tutorial configuration: airlab (default callbacks and
    ``callbacks=none``) against Pyro's ``TraceGraph_ELBO``, alternated, medians over repeats."""
    bench = cfg.benchmark.air
    steps = int(bench.steps)
    overrides = [*bench.overrides, f"trainer.max_steps={steps}", "trainer.limit_val_batches=0", "test=false"]
    if cfg.data.get("source") is not None:
        overrides.append(f"data.source={cfg.data.source}")  # the digits the VAE section uses
    variants = {"airlab": [], "airlab_no_callbacks": ["callbacks=none"]}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in [*variants, "pyro_tracegraph"]}
    for repeat in range(int(bench.repeats)):
        for name, extra in variants.items():
            air_cfg = compose_config("train", [*overrides, *extra])
            runs[name].append(airlab_run(air_cfg, output_dir / f"air_{name}_run{repeat}", seed))
            log.info("AIR %s, repeat %d: %.3f steps/s", name, repeat, runs[name][-1]["steps_per_s"])
        runs["pyro_tracegraph"].append(pyro_tracegraph_loop(compose_config("train", overrides), steps, seed))
        log.info(
            "AIR Pyro TraceGraph_ELBO, repeat %d: %.3f steps/s",
            repeat,
            runs["pyro_tracegraph"][-1]["steps_per_s"],
        )

    def median(name: str) -> float:
        return statistics.median(r["steps_per_s"] for r in runs[name])

    batch_size = int(air_cfg.data.batch_size)  # the same in every variant
    result = {
        "overrides": list(overrides),
        "steps": steps,
        "batch_size": batch_size,
        "steps_per_s": median("airlab"),
        "images_per_s": median("airlab") * batch_size,
        "no_callbacks_steps_per_s": median("airlab_no_callbacks"),
        "pyro_tracegraph_steps_per_s": median("pyro_tracegraph"),
        "pyro_tracegraph_images_per_s": median("pyro_tracegraph") * batch_size,
        "peak_rss_mb": peak_rss_mb(),  # the AIR section runs first: nothing larger came before
        "runs": runs,
    }
    result["speedup_vs_pyro_tracegraph"] = result["steps_per_s"] / result["pyro_tracegraph_steps_per_s"]
    result["callbacks_overhead"] = result["no_callbacks_steps_per_s"] / result["steps_per_s"] - 1
    # The gradient-variance monitor fires every N steps, usually after the timed runs end: its cost is
    # measured on its own and spread over N steps.
    default_cfg = compose_config("train", overrides)
    measure_s = grad_variance_seconds(default_cfg, seed)
    if measure_s is not None:
        interval = int(default_cfg.callbacks.grad_variance.every_n_steps)
        result["grad_variance_s"] = measure_s
        result["grad_variance_overhead"] = measure_s * result["steps_per_s"] / interval
        result["callbacks_overhead_total"] = result["callbacks_overhead"] + result["grad_variance_overhead"]
    reference = bench.get("pyro_example_s_per_step")
    if reference:
        result["speedup_vs_pyro_example"] = result["steps_per_s"] * float(reference)
    return result


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
    air = run_air_benchmark(cfg, output_dir, seed) if bench.get("air") and bench.air.enabled else None
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
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "runs": runs,
        "airlab_time_s": median("airlab", "time_s"),
        "airlab_fit_time_s": median("airlab", "fit_time_s"),
        "airlab_steps_per_s": median("airlab", "steps_per_s"),
        "airlab_val_elbo": median("airlab", "val/elbo"),
        "peak_rss_mb": peak_rss_mb(),
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
        air = result["air"]
        rows += [
            ("AIR: airlab steps/s (images/s)", f"{air['steps_per_s']:.2f} ({air['images_per_s']:.0f})"),
            ("AIR: airlab steps/s with callbacks=none", f"{air['no_callbacks_steps_per_s']:.2f}"),
            ("AIR: default callbacks' cost per step", f"{100 * air['callbacks_overhead']:+.1f}%"),
            (
                "AIR: Pyro TraceGraph_ELBO steps/s (images/s)",
                f"{air['pyro_tracegraph_steps_per_s']:.2f} ({air['pyro_tracegraph_images_per_s']:.0f})",
            ),
            ("AIR: airlab / Pyro TraceGraph_ELBO", f"{air['speedup_vs_pyro_tracegraph']:.2f}x"),
            ("AIR: peak RSS (MB)", f"{air['peak_rss_mb']:.0f}"),
        ]
        if "grad_variance_s" in air:
            rows += [
                ("AIR: one gradient-variance measurement (s)", f"{air['grad_variance_s']:.2f}"),
                (
                    "AIR: callbacks' cost, gradient variance included",
                    f"{100 * air['callbacks_overhead_total']:+.1f}%",
                ),
            ]
        if "speedup_vs_pyro_example" in air:
            rows.append(
                ("AIR: airlab / Pyro's example (recorded s/step)", f"{air['speedup_vs_pyro_example']:.2f}x")
            )
    for arm, seconds in result.get("estimators", {}).get("s_per_step", {}).items():
        relative = result["estimators"]["relative_to_first"][arm]
        rows.append((f"AIR step, {arm} (s, x the first arm)", f"{seconds:.3f} ({relative:.2f}x)"))
    if "cuda_peak_memory_mb" in result:
        rows.append(("CUDA peak memory (MB)", f"{result['cuda_peak_memory_mb']:.0f}"))
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
    (output_dir / "benchmark.md").write_text(table)
    log.info("benchmark:\n%s", table)
