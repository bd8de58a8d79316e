"""Trained runs side by side on the same data: ``python scripts/compare.py 'compare.runs=[RUN_A,RUN_B]'``.

For each run (its last or best checkpoint), on one split: the ELBO per item (one guide draw, as
``test/elbo``), and the count accuracy, read the way the model allows: inferred where it says how many
objects there are (AIR, as ``test/count_accuracy``), else through a linear probe of its posterior means
fitted on training items (the VAE; :mod:`airlab.evaluation.count_probe`). One picture holds the split's
first items above each run's reconstructions. Writes ``comparison.json``, ``comparison.md`` and
``reconstructions.png`` in the run directory (docs/results.md, "The VAE on MultiMNIST").
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pyro
import torch
from omegaconf import DictConfig

from airlab.analysis.runs import Run, load_run, working_directory
from airlab.config.validate import check_node
from airlab.contracts.model import GenerativeModel
from airlab.contracts.options import OneOf, Range
from airlab.errors import ConfigError
from airlab.estimators import elbo_estimate
from airlab.evaluation.count_probe import collect, linear_count_probe, majority_accuracy
from airlab.evaluation.progress import progress_bar
from airlab.resume.checkpoint import load_checkpoint
from airlab.resume.training_state import CONFIG_KEY
from airlab.utils.figures import image_grid, save_grid, upscale

log = logging.getLogger(__name__)

#: Data keys that change how or where from items are loaded, not which items there are: runs may differ
#: in them (a run trained in another checkout has another ``data_dir``).
LOADER_KEYS = (
    "batch_size", "eval_batch_size", "num_workers", "pin_memory", "persistent_workers", "data_dir",
    "download_timeout",
)  # fmt: skip


@dataclass(frozen=True)
class CompareSettings:
    """The ``compare.*`` options; their values (and defaults) are in configs/compare.yaml."""

    runs: list[str]
    checkpoint: Annotated[str, OneOf(("last", "best"))]
    split: Annotated[str, OneOf(("test", "val"))]
    num_images: Annotated[int, Range(ge=1)]
    probe_items: Annotated[int, Range(ge=2)]
    seed: Annotated[int, Range(ge=0)]
    picture_scale: Annotated[int, Range(ge=1)]
    progress: bool


def trained_states(runs: Sequence[Run], which: str) -> list[tuple[dict[str, Any], int]]:
    """The config each run's checkpoint was trained with and the step it was saved at, each file read
    once."""
    checkpoints = (load_checkpoint(run.checkpoint(which)) for run in runs)
    return [(c[CONFIG_KEY], int(c.get("global_step", 0))) for c in checkpoints]


def check_same_data(runs: Sequence[Run], configs: Sequence[dict[str, Any]]) -> None:
    """Refuse, in one line naming ``compare.runs``, runs trained on different data (loader keys aside)."""
    datas = [{k: v for k, v in (c.get("data") or {}).items() if k not in LOADER_KEYS} for c in configs]
    first = datas[0]
    for run, data in zip(runs[1:], datas[1:], strict=True):
        if data != first:
            differ = sorted(k for k in {*first, *data} if first.get(k) != data.get(k))
            raise ConfigError(
                "compare.runs",
                f"{run.path} was trained on other data than {runs[0].path} (data.{', data.'.join(differ)} "
                "differ); compare runs of the same data",
            )


def run_names(runs: Sequence[Run], configs: Sequence[dict[str, Any]]) -> list[str]:
    """Each run's task name, with its folder's name where two share one, and its place in
    ``compare.runs`` where that still leaves two alike (job ``0`` of two sweeps, a folder named twice)."""
    tasks = [c.get("task_name") or r.path.name for c, r in zip(configs, runs, strict=True)]
    named = [
        task if tasks.count(task) == 1 else f"{task} ({run.path.name})"
        for task, run in zip(tasks, runs, strict=True)
    ]
    return [
        name if named.count(name) == 1 else f"{task} #{i + 1}"
        for i, (name, task) in enumerate(zip(named, tasks, strict=True))
    ]


def no_reading(images: torch.Tensor) -> torch.Tensor:
    """Nothing per image (``[B, 0]``): :func:`collect` then gathers the true counts only."""
    return images.new_zeros(len(images), 0)


def tracked(loader: Any, description: str, enabled: bool, limit: int | None = None) -> Iterator[Any]:
    """The loader's batches (those holding its first ``limit`` items, when given), with a progress bar."""
    batches = len(loader) if limit is None else min(len(loader), math.ceil(limit / loader.batch_size))
    with progress_bar(description, batches, enabled) as advance:
        for batch in itertools.islice(loader, batches):
            yield batch
            advance()


@torch.no_grad()
def mean_elbo(model: GenerativeModel, loader: Any, description: str, enabled: bool) -> float:
    """The ELBO per item over the loader's items, one guide draw each."""
    total, items = 0.0, 0
    for batch in tracked(loader, description, enabled):
        inputs = model.batch_inputs(batch)
        total += float(elbo_estimate(model.model, model.guide, *inputs))
        items += len(inputs[0])
    return total / items


def count_reading(
    model: GenerativeModel, train_loader: Any, loader: Any, settings: CompareSettings, name: str
) -> dict[str, Any]:
    """The count accuracy on the split: inferred (``has_object_counts``), or a linear probe of the
    posterior means (``has_latent_space``), with the probe's training accuracy; empty for neither."""
    enabled = settings.progress
    if model.has_object_counts:
        inferred, true = collect(
            tracked(loader, f"{name}: counts", enabled), lambda x: model.infer(x)["count"]
        )
        return {"count_from": "inferred", "count_accuracy": float((inferred == true).float().mean())}
    if not model.has_latent_space:
        return {}
    train_batches = tracked(train_loader, f"{name}: probe's training items", enabled, settings.probe_items)
    train_features, train_counts = collect(train_batches, model.encode, settings.probe_items)
    if len(torch.unique(train_counts)) < 2:
        raise ConfigError(
            "compare.probe_items",
            f"{settings.probe_items}: the first {len(train_counts)} training items all hold "
            f"{int(train_counts[0])} objects, and the count probe needs two counts at least; raise it",
        )
    features, counts = collect(tracked(loader, f"{name}: posterior means", enabled), model.encode)
    probe = linear_count_probe(train_features, train_counts, features, counts, settings.seed)
    return {
        "count_from": f"linear probe of the posterior mean ({len(train_counts)} training items)",
        "count_accuracy": probe["test_accuracy"],
        "probe_train_accuracy": probe["train_accuracy"],
    }


def training_budget(run: Run, step: int, which: str) -> dict[str, Any]:
    """The checkpoint's step and, for the last checkpoint, the minutes the folder's ``trainer.fit`` took
    (``metrics.json``; a run resumed into this folder counts only its own part)."""
    budget: dict[str, Any] = {"steps": step}
    if which == "last" and (run.path / "metrics.json").is_file():
        fit_time = run.metrics.get("fit_time_s")
        if fit_time is not None:
            budget["training_minutes"] = round(float(fit_time) / 60, 1)
    return budget


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a markdown table."""
    lines = [
        f"{result['split']} split, {result['num_items']} items; always answering the most frequent "
        f"training count scores {result['majority_accuracy']:.4f}.",
        "",
        "| run | model | steps | training min | ELBO per item | count accuracy | count from |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["runs"].items():
        accuracy = f"{row['count_accuracy']:.4f}" if "count_accuracy" in row else "-"
        lines.append(
            f"| {name} | {row['model']} | {row.get('steps', '-')} | {row.get('training_minutes', '-')} | "
            f"{row['elbo']:.1f} | {accuracy} | {row.get('count_from', '-')} |"
        )
    pictured = [name for name, row in result["runs"].items() if row["reconstructed"]]
    lines += ["", f"`reconstructions.png`, top to bottom: {', '.join(['the inputs', *pictured])}."]
    return "\n".join(lines) + "\n"


def compare(cfg: DictConfig) -> dict[str, Any]:
    """Compare ``compare.runs`` on one split; write and return the comparison."""
    settings = CompareSettings(**check_node("compare", CompareSettings, cfg.get("compare") or {}))
    if len(settings.runs) < 1:
        raise ConfigError("compare.runs", "[]: name at least one run folder")
    runs = [load_run(path) for path in settings.runs]
    configs, steps = zip(*trained_states(runs, settings.checkpoint), strict=True)
    check_same_data(runs, configs)
    names = run_names(runs, configs)
    datamodule = runs[0].datamodule(settings.checkpoint)
    with working_directory(runs[0].launch_dir):
        loader = datamodule.dataloader(datamodule.evaluation_split(settings.split))
        train_loader = datamodule.dataloader("train")
    first = next(iter(loader))
    if "count" not in first:
        raise ConfigError("compare.runs", f"{runs[0].path}: its data has no true counts (no `count` key)")
    first_train = tracked(train_loader, "training counts", False, settings.probe_items)
    _, train_counts = collect(first_train, no_reading, settings.probe_items)
    _, split_counts = collect(loader, no_reading)
    result: dict[str, Any] = {
        "split": settings.split,
        "num_items": len(split_counts),
        "majority_accuracy": majority_accuracy(train_counts, split_counts),
        "runs": {},
    }
    pictured = itertools.islice(loader, math.ceil(settings.num_images / loader.batch_size))
    images = torch.cat([batch["image"] for batch in pictured])[: settings.num_images]
    rows = [images]
    for name, run, step in zip(names, runs, steps, strict=True):
        # pyro.param hands back what the store holds for a name it has seen: state kept there (AIR's
        # decaying-average baselines) would carry over from the run before.
        pyro.clear_param_store()
        model = run.model(settings.checkpoint, datamodule)
        pyro.set_rng_seed(settings.seed)
        row: dict[str, Any] = {
            "path": str(run.path),
            "model": type(model).__name__,
            **training_budget(run, step, settings.checkpoint),
        }
        row["elbo"] = mean_elbo(model, loader, f"{name}: ELBO", settings.progress)
        row.update(count_reading(model, train_loader, loader, settings, name))
        row["reconstructed"] = model.can_reconstruct
        if model.can_reconstruct:
            with torch.no_grad():
                rows.append(model.reconstruct(images).view_as(images))
        result["runs"][name] = row
        log.info("%s: %s", name, json.dumps({k: v for k, v in row.items() if k != "path"}))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = upscale(image_grid(torch.cat(rows), nrow=len(images)), settings.picture_scale)
    save_grid(grid, out / "reconstructions.png")
    (out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "comparison.md").write_text(markdown(result))
    log.info("wrote %s, comparison.md and reconstructions.png", out / "comparison.json")
    return result
