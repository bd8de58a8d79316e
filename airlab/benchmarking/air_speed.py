"""The benchmark's AIR section: airlab's step against its in-run reference, and the machine it ran on.

Three things alternate in one process, over the same batches, ``benchmark.air.repeats`` times: airlab's
training task with the default callbacks, the same with ``callbacks=none``, and the reference
(:mod:`airlab.benchmarking.air_reference`: Pyro's AIR example's algorithm in a bare ``SVI.step`` loop). The
speed-up is the ratio of their medians, measured now, on this machine; no figure from another day
enters it. The memory figure comes from a separate process that trains AIR and nothing else.
"""

from __future__ import annotations

import atexit
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch.utils.flop_counter import FlopCounterMode

from airlab.benchmarking.air_reference import reference_from_config, reference_svi
from airlab.config.compose import compose_config
from airlab.data.spec import describe_data
from airlab.training.build import build_datamodule, module_and_first_batch, start_task
from airlab.training.run import run_training

log = logging.getLogger(__name__)

# The monitor that times a run whose config has none (callbacks=none): the loop time is what we measure.
THROUGHPUT_MONITOR = {"_target_": "airlab.callbacks.throughput.ThroughputMonitor"}

#: The square matrix product that measures the machine: big enough to reach the BLAS's peak.
GFLOPS_SIZE = 1024


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_gflops(device: torch.device, repeats: int = 10) -> float:
    """This machine's float32 matrix-product rate, GFLOP/s: the median of ``repeats`` products of two
    ``GFLOPS_SIZE``-square matrices, after two warm-up products."""
    a = torch.randn(GFLOPS_SIZE, GFLOPS_SIZE, device=device)
    b = torch.randn(GFLOPS_SIZE, GFLOPS_SIZE, device=device)
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - started)
    return 2 * GFLOPS_SIZE**3 / statistics.median(times) / 1e9


def machine_info(device: torch.device) -> dict[str, Any]:
    """The CPU model, torch's thread count and the measured matrix-product rate of the machine at hand."""
    return {
        "cpu": cpu_model(),
        "cpu_count": torch.multiprocessing.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "matmul_gflops": matmul_gflops(device),
    }


def step_gflop(cfg: DictConfig, seed: int) -> float:
    """GFLOP of one training step of airlab's AIR (forward and backward; matrix products, batched
    products and convolutions, as ``torch.utils.flop_counter`` counts them)."""
    module, inputs = module_and_first_batch(cfg, seed)
    with FlopCounterMode(display=False) as counter:
        out = module.estimator(
            module.model_fn, module.guide_fn, *inputs, scale=module.loss_scale(inputs[0].shape[0])
        )
        out.surrogate.backward()
    return counter.get_total_flops() / 1e9


def reference_loop(cfg: DictConfig, steps: int, seed: int) -> dict[str, Any]:
    """The reference (Pyro's AIR example's algorithm) on the config's batches and sizes: ``steps`` bare
    ``SVI.step`` calls, data loading included, like the training task's loop time."""
    start_task(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    image_size = describe_data(datamodule).shapes["image"][-1]
    reference = reference_from_config(cfg.model, image_size).to(device)
    lr, baseline_lr = float(cfg.optim.lr), cfg.optim.get("baseline_lr")
    batch_size = int(cfg.data.batch_size)
    svi = reference_svi(reference, datamodule.num_train, batch_size, lr, float(baseline_lr or lr))
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


#: The child of :func:`air_alone_peak_rss_mb` writes its peak here (an environment variable names the file).
PEAK_FILE_VARIABLE = "AIRLAB_PEAK_RSS_FILE"


def own_peak_rss_mb() -> float:
    """This process's peak resident memory since its ``exec``, MB (``VmHWM``). ``getrusage`` is no use
    in a child: Linux carries the parent's high-water mark across ``fork``/``exec`` into it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # not Linux: no fork to inherit


def record_peak_at_exit() -> None:
    """In the memory child, before ``airlab-train`` runs: write its own peak to the file at exit."""
    peak_file = Path(os.environ[PEAK_FILE_VARIABLE])
    atexit.register(lambda: peak_file.write_text(f"{own_peak_rss_mb():.1f}"))  # after Hydra's sys.exit too


def air_alone_peak_rss_mb(overrides: list[str], run_dir: Path) -> float:
    """Peak resident memory (MB) of a separate process that trains AIR with ``overrides`` and does
    nothing else, as the child measures it (``VmHWM``, what ``/usr/bin/time -v`` reports)."""
    child = (
        "from airlab.benchmarking.air_speed import record_peak_at_exit; record_peak_at_exit(); "
        "from airlab.cli import train; train()"
    )
    command = [sys.executable, "-c", child]
    command += [*overrides, f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null"]
    run_dir.mkdir(parents=True, exist_ok=True)
    peak_file = run_dir / "peak_rss_mb.txt"
    env = {**os.environ, PEAK_FILE_VARIABLE: str(peak_file)}
    finished = subprocess.run(command, capture_output=True, text=True, env=env)
    if finished.returncode != 0 or not peak_file.exists():
        raise RuntimeError(f"AIR memory run failed: {finished.stderr.strip().splitlines()[-1:]}")
    return float(peak_file.read_text())


def airlab_run(cfg: DictConfig, run_dir: Path, seed: int) -> dict[str, Any]:
    """One training run (:func:`airlab.training.run.run_training`). ``time_s`` is the training loop, from
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


def grad_variance_seconds(cfg: DictConfig, seed: int) -> float | None:
    """The time of one measurement of the config's gradient-variance monitor on a training batch (the
    second of two: the first pays one-off set-up). ``None`` when the monitor is off."""
    node = (cfg.get("callbacks") or {}).get("grad_variance")
    if not node or "_target_" not in node or int(node.every_n_steps) <= 0:
        return None
    module, inputs = module_and_first_batch(cfg, seed)
    monitor = instantiate(node)
    for _ in range(2):
        monitor.measure(module, inputs, step=int(node.every_n_steps))
    return monitor.last_seconds


def run_air_benchmark(
    cfg: DictConfig, output_dir: Path, seed: int, machine: dict[str, Any]
) -> dict[str, Any]:
    """steps/s, images/s and peak RSS of AIR's tutorial configuration: airlab (default callbacks and
    ``callbacks=none``) against the in-run reference, alternated, medians over repeats; the machine,
    the GFLOP of a step and the floor they set."""
    bench = cfg.benchmark.air
    steps = int(bench.steps)
    overrides = [*bench.overrides, f"trainer.max_steps={steps}", "trainer.limit_val_batches=0", "test=false"]
    if cfg.data.get("source") is not None:
        overrides.append(f"data.source={cfg.data.source}")  # the digits the VAE section uses
    variants = {"airlab": [], "airlab_no_callbacks": ["callbacks=none"]}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in [*variants, "reference"]}
    for repeat in range(int(bench.repeats)):
        for name, extra in variants.items():
            air_cfg = compose_config("train", [*overrides, *extra])
            runs[name].append(airlab_run(air_cfg, output_dir / f"air_{name}_run{repeat}", seed))
            log.info("AIR %s, repeat %d: %.3f steps/s", name, repeat, runs[name][-1]["steps_per_s"])
        runs["reference"].append(reference_loop(compose_config("train", overrides), steps, seed))
        log.info("AIR reference, repeat %d: %.3f steps/s", repeat, runs["reference"][-1]["steps_per_s"])

    def median(name: str) -> float:
        return statistics.median(r["steps_per_s"] for r in runs[name])

    batch_size = int(air_cfg.data.batch_size)  # the same in every variant
    default_cfg = compose_config("train", overrides)
    gflop = step_gflop(default_cfg, seed)
    result = {
        "overrides": list(overrides),
        "steps": steps,
        "batch_size": batch_size,
        "steps_per_s": median("airlab"),
        "images_per_s": median("airlab") * batch_size,
        "no_callbacks_steps_per_s": median("airlab_no_callbacks"),
        "reference_steps_per_s": median("reference"),
        "reference_images_per_s": median("reference") * batch_size,
        "gflop_per_step": gflop,
        "floor_s_per_step": gflop / machine["matmul_gflops"],
        "runs": runs,
    }
    result["speedup_vs_reference"] = result["steps_per_s"] / result["reference_steps_per_s"]
    result["s_per_step_over_floor"] = 1 / result["steps_per_s"] / result["floor_s_per_step"]
    result["callbacks_overhead"] = result["no_callbacks_steps_per_s"] / result["steps_per_s"] - 1
    # The gradient-variance monitor fires every N steps, usually after the timed runs end: its cost is
    # measured on its own and spread over N steps.
    measure_s = grad_variance_seconds(default_cfg, seed)
    if measure_s is not None:
        interval = int(default_cfg.callbacks.grad_variance.every_n_steps)
        result["grad_variance_s"] = measure_s
        result["grad_variance_overhead"] = measure_s * result["steps_per_s"] / interval
        result["callbacks_overhead_total"] = result["callbacks_overhead"] + result["grad_variance_overhead"]
    if bench.memory_process:
        result["peak_rss_mb"] = air_alone_peak_rss_mb(overrides, output_dir / "air_memory_run")
    return result


def air_report_rows(air: dict[str, Any]) -> list[tuple[str, str]]:
    """The AIR section's rows of ``benchmark.md``."""
    rows = [
        ("AIR: airlab steps/s (images/s)", f"{air['steps_per_s']:.2f} ({air['images_per_s']:.0f})"),
        ("AIR: airlab steps/s with callbacks=none", f"{air['no_callbacks_steps_per_s']:.2f}"),
        ("AIR: default callbacks' cost per step", f"{100 * air['callbacks_overhead']:+.1f}%"),
        (
            "AIR: reference steps/s (images/s)",
            f"{air['reference_steps_per_s']:.2f} ({air['reference_images_per_s']:.0f})",
        ),
        ("AIR: airlab / reference (speedup_vs_reference)", f"{air['speedup_vs_reference']:.2f}x"),
        (
            "AIR: GFLOP per step; floor (s/step); airlab's step / floor",
            f"{air['gflop_per_step']:.2f}; {air['floor_s_per_step']:.4f}; "
            f"{air['s_per_step_over_floor']:.1f}x",
        ),
    ]
    if "peak_rss_mb" in air:
        rows.append(("AIR: peak RSS of a process training AIR alone (MB)", f"{air['peak_rss_mb']:.0f}"))
    if "grad_variance_s" in air:
        rows += [
            ("AIR: one gradient-variance measurement (s)", f"{air['grad_variance_s']:.2f}"),
            (
                "AIR: callbacks' cost, gradient variance included",
                f"{100 * air['callbacks_overhead_total']:+.1f}%",
            ),
        ]
    return rows
