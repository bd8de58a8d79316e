"""The estimator-study task (``scripts/study.py``): one job of the study's multirun is one training run
of one arm with one seed; the study's files are written when the multirun ends
(:mod:`airlab.study_report`)."""

from __future__ import annotations

from typing import Annotated

from omegaconf import DictConfig

from airlab.config import Range, check_node
from airlab.training import run_training


class StudySettings:
    """The ``study.*`` options; their values (and defaults) are in configs/study.yaml."""

    def __init__(self, threshold: Annotated[float, Range(gt=0, le=1)]) -> None:
        self.threshold = threshold


def study_job(cfg: DictConfig) -> float | None:
    """Check ``study.*``, then train (see :mod:`airlab.training`); returns ``optimized_metric``."""
    check_node("study", StudySettings, cfg.get("study") or {})
    metrics = run_training(cfg)
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None
