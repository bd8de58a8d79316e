"""Sweeps that survive a kill: ``summary.csv`` after every job, and ``resume_sweep=true``.

:class:`SweepSummary` (a Hydra callback, ``configs/hydra/default.yaml``) rebuilds ``summary.csv`` at the
sweep root from the job directories' ``metrics.json`` after every job and when the multirun ends. The
file is replaced atomically under a file lock, so a sweep killed midway keeps the rows of its finished
jobs, and jobs that end at once in parallel processes (joblib, submitit: ``on_job_end`` runs in the job's
own process there) never lose each other's rows. Beside it, under the same lock, ``summary_by_config.csv``
and ``summary.md`` hold each configuration's metrics over seeds (:mod:`airlab.tracking.aggregate`).

Rerunning a sweep into the same ``hydra.sweep.dir`` with ``resume_sweep=true`` skips each job that
finished before (:func:`finished_job_metrics`: its ``metrics.json`` exists and its overrides are the
ones it ran with) and resumes an unfinished one from its own ``checkpoints/last.ckpt``
(:func:`job_checkpoint`, used by :func:`airlab.resume.checkpoint.resolve_checkpoint`).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from airlab.tracking.aggregate import (
    METRIC_COLUMN,
    STATISTICS,
    aggregate_jobs,
    markdown_table,
    override_values,
)
from airlab.utils.atomic import atomic_open, atomic_write_text

log = logging.getLogger(__name__)

#: The top-level key that resumes a sweep; left out of the overrides a finished job is matched on.
RESUME_KEY = "resume_sweep"
#: Where ``summary.csv``'s writers take turns (beside it, in the sweep root).
LOCK_NAME = ".summary.csv.lock"
#: The ``status`` of a job without ``metrics.json``.
NO_METRICS = "no metrics.json (failed or still running)"
#: Where a failed job leaves its one-line reason (``summary.csv``'s status ``failed: <reason>``).
FAILED_NAME = "failed.txt"
#: Beside ``summary.csv``: each configuration's metrics over :data:`AGGREGATE_OVER`, as CSV and markdown.
BY_CONFIG_NAME = "summary_by_config.csv"
MARKDOWN_NAME = "summary.md"
#: The override whose values the configurations of a sweep are aggregated over.
AGGREGATE_OVER = "seed"


def _is_resume_override(override: str) -> bool:
    """Whether ``override`` (``resume_sweep=true``, ``+resume_sweep=true``, ...) sets :data:`RESUME_KEY`."""
    return override.lstrip("+~").split("=", 1)[0] == RESUME_KEY


def overrides_text(overrides: list[str]) -> str:
    """A job's overrides as ``summary.csv`` writes them: space-separated, without ``resume_sweep``."""
    return " ".join(o for o in overrides if not _is_resume_override(o))


def saved_overrides(job_dir: Path) -> list[str] | None:
    """The overrides Hydra saved for the job in ``job_dir`` (``.hydra/overrides.yaml``), or None."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    return [ln[2:].strip() for ln in path.read_text().splitlines() if ln.startswith("- ")]


def read_metrics(job_dir: Path) -> dict[str, Any] | None:
    """The job's ``metrics.json``, or None when it has none (or an unreadable one)."""
    path = job_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def job_status(job_dir: Path) -> str | None:
    """None for a finished job (it has ``metrics.json``), else ``failed: <reason>`` or :data:`NO_METRICS`."""
    if read_metrics(job_dir) is not None:
        return None
    failed = job_dir / FAILED_NAME
    return f"failed: {failed.read_text().strip()}" if failed.is_file() else NO_METRICS


def read_summary(sweep_dir: Path) -> dict[int, dict[str, str]]:
    """The rows of ``sweep_dir/summary.csv`` by job number (empty when there is no such file)."""
    path = sweep_dir / "summary.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {int(row["job"]): row for row in csv.DictReader(handle) if row.get("job", "").isdigit()}


def summarise_sweep(sweep_dir: Path) -> Path | None:
    """Write ``summary.csv`` in ``sweep_dir``: one row per job, its overrides and its ``metrics.json``.

    The file is written atomically (temporary file + rename) under a lock on ``.summary.csv.lock``, so
    concurrent writers take turns and the last one sees every finished job. A finished job whose
    directory is gone keeps the row it had. ``summary_by_config.csv`` and ``summary.md`` are rewritten
    with it (:func:`write_config_summary`). Returns the path, or None when the sweep has no jobs."""
    if not sweep_dir.is_dir():
        return None
    with FileLock(str(sweep_dir / LOCK_NAME)):
        rows: dict[int, dict[str, Any]] = dict(read_summary(sweep_dir))
        saved: dict[int, list[str]] = {}
        for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()):
            row: dict[str, Any] = {"job": int(job_dir.name)}
            overrides = saved_overrides(job_dir)
            if overrides is not None:
                saved[row["job"]] = overrides
                row["overrides"] = overrides_text(overrides)
            metrics = read_metrics(job_dir)
            if metrics is not None:
                row.update(metrics)
            else:
                row["status"] = job_status(job_dir)
            rows[row["job"]] = row
        if not rows:
            return None
        columns = ["job", "overrides"] + sorted({k for r in rows.values() for k in r} - {"job", "overrides"})
        path = sweep_dir / "summary.csv"
        with atomic_open(path, "w", newline="") as handle:  # a reader never sees half a table
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows[job] for job in sorted(rows))
        try:
            write_config_summary(sweep_dir, [rows[job] for job in sorted(rows)], saved)
        except Exception as err:  # the per-configuration table must never cost summary.csv or the job
            log.warning("could not update %s and %s: %s", BY_CONFIG_NAME, MARKDOWN_NAME, err)
    return path


def write_config_summary(
    sweep_dir: Path, rows: list[dict[str, Any]], saved: dict[int, list[str]]
) -> tuple[Path, Path]:
    """Write ``summary_by_config.csv`` and ``summary.md`` in ``sweep_dir`` (atomically; the caller holds
    the lock): the finished jobs of ``rows`` (``summary.csv``'s) aggregated over :data:`AGGREGATE_OVER`.
    A job's overrides are the ones Hydra saved (``saved``), else its row's text (a job whose directory is
    gone). Returns the two paths."""
    jobs = []
    for row in rows:
        if row.get("status"):
            continue
        lines = saved.get(int(row["job"])) or str(row.get("overrides") or "").split()
        values = override_values([o for o in lines if not _is_resume_override(o)])
        jobs.append((values, {k: v for k, v in row.items() if k not in ("job", "overrides", "status")}))
    by, table = aggregate_jobs(jobs, over=AGGREGATE_OVER, exclude=(RESUME_KEY,))
    csv_path, md_path = sweep_dir / BY_CONFIG_NAME, sweep_dir / MARKDOWN_NAME
    with atomic_open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*by, METRIC_COLUMN, *STATISTICS])
        writer.writeheader()
        writer.writerows(table)
    title = f"# {sweep_dir.name}: {len(jobs)} finished jobs, metrics over {AGGREGATE_OVER}\n\n"
    body = markdown_table(table, by) if table else "No finished job yet.\n"
    atomic_write_text(md_path, title + body)
    return csv_path, md_path


def _sweep_job() -> tuple[Path, int, str] | None:
    """This multirun job's sweep root, number and overrides text; None outside a multirun job."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or hydra_cfg.job.get("num") is None:
        return None
    return Path(hydra_cfg.sweep.dir), int(hydra_cfg.job.num), overrides_text(list(hydra_cfg.overrides.task))


def finished_job_metrics(cfg: DictConfig) -> dict[str, Any] | None:
    """With ``resume_sweep=true`` in a multirun job: the ``metrics.json`` of this job's earlier, finished
    run (same job number, same overrides), so that the job is skipped; otherwise None (train it).

    The overrides are compared with the job's row in ``summary.csv`` (Hydra has rewritten the job's
    ``.hydra/overrides.yaml`` by now); with no row, ``metrics.json`` alone counts. A job whose
    overrides differ (an Optuna trial that drew other values) is trained again."""
    if cfg.get(RESUME_KEY) is not True:
        return None
    job = _sweep_job()
    if job is None:
        return None
    sweep_dir, num, overrides = job
    metrics = read_metrics(Path(cfg.paths.output_dir))
    if metrics is None:
        return None
    row = read_summary(sweep_dir).get(num)
    if row is not None and row.get("overrides", overrides) != overrides:
        log.info(
            "resume_sweep: job %d ran with other overrides (%s); training it again", num, row.get("overrides")
        )
        return None
    log.info("resume_sweep: job %d finished before; skipped, metrics from %s", num, cfg.paths.output_dir)
    return metrics


def job_checkpoint(cfg: DictConfig) -> Path | None:
    """With ``resume_sweep=true`` in a multirun job: the job's own ``checkpoints/last.ckpt`` (left by an
    earlier run of the sweep that did not finish), or None."""
    if cfg.get(RESUME_KEY) is not True or _sweep_job() is None:
        return None
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def record_failed_job(reason: str) -> None:
    """In a multirun job: leave ``reason`` in the job's ``failed.txt`` and rebuild ``summary.csv``, as far
    as the disk allows (a full disk may refuse both; the job's log has the line too)."""
    job = _sweep_job()
    if job is None:
        return
    sweep_dir, num, _ = job
    try:
        (sweep_dir / str(num) / FAILED_NAME).write_text(" ".join(reason.split()) + "\n")
        summarise_sweep(sweep_dir)
    except OSError as err:
        log.warning("could not record the failure in summary.csv: %s", err)


class SweepSummary(Callback):
    """Hydra callback: rewrites the sweep's ``summary.csv`` after every job and when a multirun ends."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """After a multirun job (in the job's process), rebuild the summary with its row."""
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            summarise_sweep(Path(config.hydra.sweep.dir))
        except Exception as err:  # a summary must never fail the job that just finished
            log.warning("could not update summary.csv: %s", err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise the sweep directory and log where the summary went."""
        path = summarise_sweep(Path(config.hydra.sweep.dir))
        if path is not None:
            log.info("sweep summary: %s", path)
