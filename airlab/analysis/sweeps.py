"""A sweep folder as a Python object (``airlab.load_sweep``): a DataFrame of its jobs and their metrics
aggregated per configuration over seeds.

``Sweep.aggregate`` gives one row per configuration with a ``(metric, statistic)`` column pair each;
``Sweep.by_metric`` is the same, tidy: the table of the sweep's ``summary_by_config.csv``, computed by the
same code (:func:`airlab.tracking.aggregate.aggregate_jobs`), one row per configuration and metric, with
the configuration's override values, ``metric``, ``n``, ``mean``, ``sd`` (ddof=1), ``se``, the t-interval
``ci_low``/``ci_high``, ``min`` and ``max``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from airlab.analysis.runs import Run, load_run
from airlab.errors import ConfigError
from airlab.tracking.aggregate import METRIC_COLUMN, STATISTICS, aggregate_jobs, override_values
from airlab.tracking.sweep import RESUME_KEY, job_status, read_metrics, saved_overrides

#: The ``status`` of a job that wrote ``metrics.json``.
FINISHED = "finished"


@dataclass(frozen=True)
class Job:
    """One job folder of a sweep: its number, status, override values and ``metrics.json`` (or {})."""

    job: int
    status: str
    overrides: dict[str, Any]
    metrics: dict[str, Any]


def read_job(job_dir: Path) -> Job:
    """The :class:`Job` in ``job_dir`` (a folder named by its number), ``resume_sweep`` left out."""
    lines = saved_overrides(job_dir) or []
    values = override_values(lines)
    values.pop(RESUME_KEY, None)
    metrics = read_metrics(job_dir)  # read once: a job with metrics.json is finished
    status = FINISHED if metrics is not None else job_status(job_dir)
    return Job(int(job_dir.name), status, values, metrics or {})


def jobs_frame(jobs: list[Job]) -> pd.DataFrame:
    """One row per job: ``job``, ``status``, the override columns (in order of first appearance), then the
    metric columns (sorted); a metric that is also an override (``seed``) is the override's column."""
    overrides = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    metrics = sorted({k for job in jobs for k in job.metrics} - set(overrides) - {"job", "status"})
    rows = [{"job": j.job, "status": j.status, **j.metrics, **j.overrides} for j in jobs]
    return pd.DataFrame(rows, columns=["job", "status", *overrides, *metrics])


@dataclass
class Sweep:
    """A sweep folder: ``jobs`` (a DataFrame, one row per job) and :meth:`aggregate`."""

    path: Path
    records: list[Job]

    @property
    def jobs(self) -> pd.DataFrame:
        """One row per job: ``job``, ``status`` (``finished``, ``failed: <reason>`` or no metrics.json), its
        overrides as columns, then its final metrics (``metrics.json``) as columns."""
        return jobs_frame(self.records)

    def aggregate(self, over: str = "seed", confidence: float = 0.95) -> pd.DataFrame:
        """The finished jobs' metrics per configuration, **one row per configuration**: grouped by every
        override except ``over`` (and ``resume_sweep``), which form the index (``configuration`` 0, 1, ...
        when no other override varies), with a column pair ``(metric, statistic)`` for each metric and
        each of ``n``, ``mean``, ``sd``, ``se``, ``ci_low``, ``ci_high``, ``min``, ``max``
        (:meth:`by_metric`): ``table["val/elbo"]["sd"]``."""
        long = self.by_metric(over, confidence)
        index = [c for c in long.columns if c not in (METRIC_COLUMN, *STATISTICS)]
        if not index:
            long = long.assign(configuration=0)
            index = ["configuration"]
        metrics = list(dict.fromkeys(long[METRIC_COLUMN]))
        wide = long.pivot(index=index, columns=METRIC_COLUMN, values=list(STATISTICS))
        wide = wide.swaplevel(axis=1)
        return wide[[(metric, stat) for metric in metrics for stat in STATISTICS]]

    def by_metric(self, over: str = "seed", confidence: float = 0.95) -> pd.DataFrame:
        """The same statistics, tidy: one row per configuration and metric, the table of
        ``summary_by_config.csv``: the override columns, ``metric``, ``n``, ``mean``, ``sd`` (sample,
        ddof=1), ``se`` (sd/sqrt(n)), ``ci_low`` and ``ci_high`` (the ``confidence`` t-interval,
        mean ± t·se) and ``min``, ``max``; with n=1, sd, se and the interval are NaN."""
        finished = [(j.overrides, j.metrics) for j in self.records if j.status == FINISHED]
        by, table = aggregate_jobs(finished, over=over, exclude=(RESUME_KEY,), confidence=confidence)
        return pd.DataFrame(table, columns=[*by, METRIC_COLUMN, *STATISTICS])

    def run(self, job: int) -> Run:
        """Job ``job``'s run (:func:`airlab.analysis.runs.load_run` of its folder)."""
        return load_run(self.path / str(job))


def load_sweep(path: str | Path) -> Sweep:
    """The sweep in folder ``path`` (``hydra.sweep.dir``: job folders ``0``, ``1``, ...); one line naming
    it when it has no job folders."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConfigError("load_sweep", f"{path}: no such sweep folder")
    folders = sorted(
        (p for p in path.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not folders:
        raise ConfigError("load_sweep", f"{path}: not a sweep folder (no job folders 0, 1, ...)")
    return Sweep(path, [read_job(folder) for folder in folders])
