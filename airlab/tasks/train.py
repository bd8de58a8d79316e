"""The training task (``scripts/train.py``): one training run; returns the metric a sweeper optimises."""

from __future__ import annotations

from omegaconf import DictConfig

from airlab.sweep import finished_job_metrics
from airlab.training import run_training


def train(cfg: DictConfig) -> float | None:
    """Fit, test with the final weights and write metrics.json in the run directory (see
    :mod:`airlab.training`); returns ``metrics[optimized_metric]`` for Optuna and ``summary.csv``.
    With ``resume_sweep=true``, a sweep job that finished before is not trained again: its metrics are
    read back (:func:`airlab.sweep.finished_job_metrics`)."""
    metrics = finished_job_metrics(cfg)
    if metrics is None:
        metrics = run_training(cfg)
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None
