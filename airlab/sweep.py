"""Hydra callback: after a multirun, write summary.csv (one row per job) at the sweep root."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from airlab.atomic import atomic_open

log = logging.getLogger(__name__)


def summarise_sweep(sweep_dir: Path) -> Path | None:
    """Write ``summary.csv`` in ``sweep_dir``: one row per job, its overrides and its ``metrics.json``.
    The file is written atomically (temporary file + rename). Returns its path, or None when the sweep
    has no jobs."""
    rows: list[dict[str, Any]] = []
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        row: dict[str, Any] = {"job": int(job_dir.name)}
        overrides = job_dir / ".hydra" / "overrides.yaml"
        if overrides.is_file():
            lines = [ln[2:].strip() for ln in overrides.read_text().splitlines() if ln.startswith("- ")]
            row["overrides"] = " ".join(lines)
        metrics = job_dir / "metrics.json"
        if metrics.is_file():
            row.update(json.loads(metrics.read_text()))
        else:
            row["status"] = "no metrics.json (failed or still running)"
        rows.append(row)
    if not rows:
        return None
    columns = ["job", "overrides"] + sorted({k for r in rows for k in r} - {"job", "overrides"})
    path = sweep_dir / "summary.csv"
    with atomic_open(path, "w", newline="") as handle:  # a reader never sees half a table
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["job"]))
    return path


class SweepSummary(Callback):
    """Hydra callback: writes the sweep's ``summary.csv`` when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise the sweep directory and log where the summary went."""
        path = summarise_sweep(Path(config.hydra.sweep.dir))
        if path is not None:
            log.info("sweep summary: %s", path)
