"""The console scripts (``airlab-train``, ``airlab-evaluate``, ...) and the Hydra apps behind them.

``pip install .`` (or ``-e``) installs one command per task; ``scripts/<task>.py`` runs the same app.
Each composes the configs installed with the package (:data:`airlab.CONFIG_DIR`, the repository's
``configs/``); Hydra's ``--config-dir DIR`` (``-cd``) puts a user's config folder in front of them, so its
``model/``, ``data/`` and ``experiment/`` options join airlab's. Outputs go under the current directory.
The current directory is also importable (after everything else on ``sys.path``), so a model package in
the folder a command runs from is found as it is by ``python -m``.

Each primary config names its job (``hydra.job.name``), so the log is ``train.log``, ``evaluate.log``, ...
whichever entry point ran it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from airlab import CONFIG_DIR
from airlab.errors import report_user_errors, run_hydra_app

CONFIG_PATH = str(CONFIG_DIR)


def run(app: Callable[[], Any]) -> None:
    """Run a Hydra app as a command: the current directory importable, Hydra's errors as one line."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    run_hydra_app(app)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def train_app(cfg: DictConfig) -> float | None:
    """Fit, test and write metrics.json (``airlab.training.run``)."""
    from airlab.training.run import train as train_task

    return report_user_errors(train_task, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def evaluate_app(cfg: DictConfig) -> None:
    """Evaluate ``ckpt_path`` (``airlab.tasks.evaluate``)."""
    from airlab.tasks.evaluate import evaluate as evaluate_task

    report_user_errors(evaluate_task, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="study")
def study_app(cfg: DictConfig) -> float | None:
    """One job of an estimator study (``airlab.training.run``)."""
    from airlab.training.run import study_job

    return report_user_errors(study_job, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="variance_report")
def variance_report_app(cfg: DictConfig) -> None:
    """Side-by-side gradient variance (``airlab.tasks.variance_report``)."""
    from airlab.tasks.variance_report import run_variance_report

    report_user_errors(run_variance_report, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="benchmark")
def benchmark_app(cfg: DictConfig) -> None:
    """Throughput and memory benchmark (``airlab.tasks.benchmark``)."""
    from airlab.tasks.benchmark import run_benchmark

    report_user_errors(run_benchmark, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="generate_multimnist")
def generate_multimnist_app(cfg: DictConfig) -> None:
    """Build or validate the MultiMNIST cache (``airlab.tasks.generate_multimnist``)."""
    from airlab.tasks.generate_multimnist import generate

    report_user_errors(generate, cfg)


def train() -> None:
    """``airlab-train [overrides]``: train a model (``--cfg job`` lists the keys)."""
    run(train_app)


def evaluate() -> None:
    """``airlab-evaluate ckpt_path=PATH [overrides]``: evaluate a checkpoint."""
    run(evaluate_app)


def study() -> None:
    """``airlab-study study=<preset> [overrides]``: an estimator study as one multirun."""
    run(study_app)


def variance_report() -> None:
    """``airlab-variance-report [overrides]``: gradient variance of estimators, side by side."""
    run(variance_report_app)


def benchmark() -> None:
    """``airlab-benchmark [overrides]``: throughput and memory, against in-run references."""
    run(benchmark_app)


def generate_multimnist() -> None:
    """``airlab-generate-multimnist [data.* overrides]``: build or validate the MultiMNIST cache."""
    run(generate_multimnist_app)
