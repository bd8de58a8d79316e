"""The MultiMNIST task (``scripts/generate_multimnist.py``): build or check the cache, with a progress
bar per split and a table of what is in it."""

from __future__ import annotations

import sys
import time

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from airlab.config import validate_config
from airlab.data.multimnist import SPLITS, MultiMNISTDataModule
from airlab.errors import ConfigError
from airlab.training.build import build_datamodule


def generate(cfg: DictConfig) -> None:
    """Load or build every split of the ``data=multimnist`` cache and print a table of it."""
    validate_config(cfg)
    datamodule = build_datamodule(cfg)
    if not isinstance(datamodule, MultiMNISTDataModule):
        raise ConfigError("data", f"{cfg.data._target_} is not MultiMNIST; use data=multimnist")
    datamodule.load_digits()  # before the bar: it may read or download MNIST, and logs the source

    # Off a terminal (logs, CI) rich assumes 80 columns, which would fold the file names.
    console = Console(width=None if sys.stdout.isatty() else 120)
    entries = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for split in SPLITS:
            total = datamodule.sizes[split]
            task = progress.add_task(f"{split} canvases", total=total)
            started = time.perf_counter()
            entry = datamodule.load_split(split, progress=lambda n, task=task: progress.advance(task, n))
            progress.update(
                task,
                completed=total,
                description=f"{split} canvases ({'built' if entry.built else 'cached'})",
            )
            entries.append((entry, time.perf_counter() - started))

    table = Table(title=f"MultiMNIST cache in {datamodule.cache_dir}")
    histogram_name = f"images with 0..{datamodule.canvas.max_digits} digits"
    for name in ("split", "images", histogram_name, "cache file", "status", "seconds"):
        table.add_column(name, justify="right" if name in ("images", "seconds") else "left")
    for entry, seconds in entries:
        counts = [int((entry.arrays.count == k).sum()) for k in range(datamodule.canvas.max_digits + 1)]
        histogram = " / ".join(str(n) for n in counts)
        status = "loaded" if not entry.built else "built" if entry.reason == "no cache yet" else "rebuilt"
        table.add_row(
            entry.split, str(len(entry.arrays)), histogram, entry.path.name, status, f"{seconds:.1f}"
        )
    console.print(table)
