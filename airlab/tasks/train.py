"""The training task (``scripts/train.py``): one training run; returns the metric a sweeper optimises."""

from __future__ import annotations

from omegaconf import DictConfig

from airlab.errors import AirlabError, OutputError, unwritable
from airlab.sweep import finished_job_metrics, record_failed_job
from airlab.training import run_training


def train(cfg: DictConfig) -> float | None:
    """Fit, test with the final weights and write metrics.json in the run directory (see
    :mod:`airlab.training`); returns ``metrics[optimized_metric]`` for Optuna and ``summary.csv``.
    With ``resume_sweep=true``, a sweep job that finished before is not trained again: its metrics are
    read back (:func:`airlab.sweep.finished_job_metrics`). A run that fails on a user's error or an
    unwritable place (a full disk) ends in one line, and a sweep job is recorded as failed."""
    metrics = finished_job_metrics(cfg)
    if metrics is None:
        try:
            metrics = run_training(cfg)
        except AirlabError as err:
            record_failed_job(str(err))  # a sweep's summary.csv says so (nothing outside a multirun)
            raise
        except Exception as err:  # a full disk, a read-only folder (also when a library wraps the
            line = unwritable(err)  # OSError): one line, the job marked failed
            if line is None:
                raise
            record_failed_job(line)
            raise OutputError(line) from None
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None
