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

import importlib
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


def task_app(config_name: str, task: str) -> Callable[[], Any]:
    """The Hydra app on ``configs/<config_name>.yaml`` that runs ``task`` (``module:function``), its user
    errors as one line. The task's module is imported when the app runs, after Hydra has composed the
    config: a mistyped option fails before torch is imported."""
    module_name, function_name = task.split(":")

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
    def app(cfg: DictConfig) -> Any:
        function = getattr(importlib.import_module(module_name), function_name)
        return report_user_errors(function, cfg)

    app.__doc__ = f"``{task}`` on the composed ``{config_name}`` config."
    return app


train_app = task_app("train", "airlab.training.run:train")
evaluate_app = task_app("evaluate", "airlab.tasks.evaluate:evaluate")
study_app = task_app("study", "airlab.training.run:study_job")
variance_report_app = task_app("variance_report", "airlab.tasks.variance_report:run_variance_report")
benchmark_app = task_app("benchmark", "airlab.tasks.benchmark:run_benchmark")
compare_app = task_app("compare", "airlab.tasks.compare:compare")
generate_multimnist_app = task_app("generate_multimnist", "airlab.tasks.generate_multimnist:generate")


def command(app: Callable[[], Any], doc: str) -> Callable[[], None]:
    """A console script that runs ``app`` (:func:`run`); ``doc`` says how it is called."""

    def main() -> None:
        run(app)

    main.__doc__ = doc
    return main


train = command(train_app, "``airlab-train [overrides]``: train a model (``--cfg job`` lists the keys).")
evaluate = command(evaluate_app, "``airlab-evaluate ckpt_path=PATH [overrides]``: evaluate a checkpoint.")
study = command(study_app, "``airlab-study study=<preset> [overrides]``: an estimator study as one multirun.")
variance_report = command(
    variance_report_app,
    "``airlab-variance-report [overrides]``: gradient variance of estimators, side by side.",
)
benchmark = command(
    benchmark_app, "``airlab-benchmark [overrides]``: throughput and memory, against references."
)
compare = command(compare_app, "``airlab-compare 'compare.runs=[RUN_A,RUN_B]'``: trained runs side by side.")
generate_multimnist = command(
    generate_multimnist_app,
    "``airlab-generate-multimnist [data.* overrides]``: build or check the MultiMNIST cache.",
)
