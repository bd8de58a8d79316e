"""The evaluation task: a checkpoint's bounds, counts and pictures on a split (``scripts/evaluate.py``).

The checkpoint is rebuilt with the config it was trained with, the command-line overrides replayed on
top (:mod:`airlab.config.replay`, :mod:`airlab.resume.checkpoint`). On ``eval.split`` it computes the
ELBO and the importance-weighted bound with ``eval.iwae_k`` samples per image
(:mod:`airlab.evaluation.bounds`), AIR's count accuracy and confusion matrix, and the pictures; it writes
``evaluation.json`` and the PNGs in the run directory and prints a table.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from airlab import quiet_third_party_warnings
from airlab.config import check_node, resolve_device, validate_config
from airlab.config.replay import merge_overrides
from airlab.data.spec import describe_data
from airlab.evaluation.bounds import dataset_bounds, summarise
from airlab.evaluation.counts import ObjectCounts
from airlab.evaluation.latent_pictures import latent_space_pictures
from airlab.evaluation.settings import EvalSettings
from airlab.resume.checkpoint import check_model_target, load_checkpoint, load_model_weights
from airlab.resume.training_state import CONFIG_KEY
from airlab.training.build import build_datamodule, build_model, start_task
from airlab.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

FALLBACK_GROUPS = ("model", "data", "elbo", "optim", "trainer", "logger", "callbacks", "paths")
RESULTS_FILE = "evaluation.json"


def hydra_context() -> tuple[list[str], tuple[str, ...]]:
    """The command line's task overrides and the names of the config groups Hydra knows."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], FALLBACK_GROUPS
    hydra_cfg = HydraConfig.get()
    return list(hydra_cfg.overrides.task), tuple(hydra_cfg.runtime.choices.keys())


def evaluation_config(
    cfg: DictConfig, trained: dict[str, Any], overrides: Sequence[str] | None
) -> DictConfig:
    """The trained config, overrides replayed, with this run's paths; validated."""
    command_line, groups = hydra_context()
    merged = merge_overrides(trained, cfg, command_line if overrides is None else overrides, groups)
    with open_dict(merged):
        merged.paths = OmegaConf.to_container(cfg.paths, resolve=True)
        merged.task_name = cfg.get("task_name", "evaluate")
        merged.ckpt_path = None  # resuming is not what this run does
    validate_config(merged)
    return merged


def print_table(results: dict[str, Any], split: str) -> None:
    """Print the evaluation's bounds and metrics for ``split`` as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"evaluation on {split} ({results['num_images']} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("ELBO (nats/image)", f"{results[f'{split}/elbo']:.2f} ± {results[f'{split}/elbo_sem']:.2f}")
    table.add_row(
        f"IWAE bound, K={results[f'{split}/iwae_k']}",
        f"{results[f'{split}/iwae']:.2f} ± {results[f'{split}/iwae_sem']:.2f}",
    )
    if f"{split}/count_accuracy" in results:
        table.add_row("count accuracy", f"{100 * results[f'{split}/count_accuracy']:.1f}%")
        rows = results[f"{split}/count_confusion"]
        table.add_row(
            "count confusion (rows true, cols inferred)",
            "\n".join(" ".join(f"{v:5d}" for v in r) for r in rows),
        )
    table.add_row("checkpoint step", str(results["global_step"]))
    for name, file in results.get("pictures", {}).items():
        table.add_row(f"picture: {name}", file)
    Console().print(table)


def evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path``; ``overrides`` default to the command line's (Hydra's task overrides).
    Returns what it writes to ``evaluation.json``."""
    started = time.perf_counter()
    quiet_third_party_warnings()
    settings = EvalSettings(**check_node("eval", EvalSettings, cfg.get("eval") or {}))
    ckpt_path = cfg.get("ckpt_path")
    checkpoint = load_checkpoint(ckpt_path)
    merged = evaluation_config(cfg, checkpoint[CONFIG_KEY], overrides)
    device = resolve_device(settings.device, "eval.device")
    start_task(settings.seed)
    datamodule = build_datamodule(merged)
    check_model_target(checkpoint[CONFIG_KEY], merged, str(ckpt_path))  # before building another class
    model = build_model(merged.model, datamodule)
    load_model_weights(model, checkpoint, merged, str(ckpt_path))
    model = model.to(device).eval()
    split = settings.split
    loader = datamodule.dataloader(datamodule.evaluation_split(split))
    num_images = len(loader.dataset)
    if merged.data.get("subset_size") is not None:
        log.warning(
            "data.subset_size=%s caps the split; pass data.subset_size=null for every image",
            merged.data.subset_size,
        )
    log.info(
        "evaluating %s on %d %s images (data.source=%s) on %s",
        ckpt_path,
        num_images,
        split,
        merged.data.get("source"),
        device,
    )

    counts = None
    if model.has_object_counts and "count" in describe_data(datamodule).keys:
        counts = ObjectCounts(model, settings.num_images, settings.num_errors)
    chunk = min(settings.iwae_chunk, settings.iwae_k)
    bounds_started = time.perf_counter()
    bounds = dataset_bounds(
        model.model,
        model.guide,
        loader,
        settings.iwae_k,
        chunk,
        device,
        total=len(loader),
        progress=settings.progress,
        on_batch=counts,
        inputs=model.inputs,
    )
    bounds_s = time.perf_counter() - bounds_started
    elbo, elbo_sem = summarise(bounds.elbo)
    iwae, iwae_sem = summarise(bounds.iwae)
    results: dict[str, Any] = {
        f"{split}/elbo": elbo,
        f"{split}/elbo_sem": elbo_sem,
        f"{split}/iwae": iwae,
        f"{split}/iwae_sem": iwae_sem,
        f"{split}/iwae_k": settings.iwae_k,
        "split": split,
        "num_images": int(len(bounds.elbo)),
        "ckpt_path": str(Path(ckpt_path).resolve()),
        "global_step": int(checkpoint.get("global_step", -1)),
        "epoch": int(checkpoint.get("epoch", -1)),
        "model": merged.model._target_.rsplit(".", 1)[-1],
        "data_source": merged.data.get("source"),
        "seed": settings.seed,
        "device": str(device),
        "time/bounds_s": round(bounds_s, 3),
    }
    confusion = None
    if counts is not None:
        count_results, confusion = counts.results(split)
        results.update(count_results)

    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    writers = []
    if settings.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writers.append(SummaryWriter(str(run_dir / "tensorboard")))
    step = results["global_step"]
    pictures: dict[str, str] = {}
    if counts is not None and settings.pictures:
        pictures.update(counts.pictures(run_dir, confusion, settings.picture_scale, writers, split, step))
    if model.has_latent_space and (settings.tsne or settings.pictures):
        tsne_started = time.perf_counter()
        files, tsne = latent_space_pictures(model, loader, settings, run_dir, split, writers, step)
        pictures.update(files)
        if tsne is not None:
            results["tsne_points"] = len(tsne.embedding)
            results["time/tsne_s"] = round(tsne.seconds, 3)
        results["time/pictures_s"] = round(time.perf_counter() - tsne_started, 3)
    results["pictures"] = pictures
    results["time/total_s"] = round(time.perf_counter() - started, 3)
    results["settings"] = asdict(settings)
    for writer in writers:
        for key, value in results.items():
            if key.startswith(f"{split}/") and isinstance(value, float) and math.isfinite(value):
                writer.add_scalar(key, value, step)
        writer.close()

    # Strict JSON: a standard error over a single image is nan, written as null.
    finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in results.items()}
    atomic_write_text(run_dir / RESULTS_FILE, json.dumps(finite, indent=2, sort_keys=True, allow_nan=False))
    log.info("evaluation: %s", json.dumps({k: v for k, v in results.items() if "confusion" not in k}))
    print_table(results, split)
    return results
