"""Experiment trackers beside TensorBoard: MLflow (a local SQLite store) and Weights & Biases (offline).

``logger=mlflow`` builds :class:`MLflowLogger`; Lightning sends it every logged metric. Pictures reach it
through :class:`MLflowPictureWriter`, which takes the ``add_image``/``add_figure`` calls the picture
callbacks make on TensorBoard's SummaryWriters (``airlab.callbacks.images.picture_writers``) and stores
each picture as a PNG artifact, ``<tag>/step_<step>.png`` (:class:`WandbPictureWriter` does the same for
wandb, as ``wandb.Image`` media). The flattened config goes to MLflow's params
when the run starts, as it goes to TensorBoard's hparams (:func:`log_config_params`).

``logger=wandb`` builds :class:`WandbLogger`, which refuses at config time, in one line, when the
optional ``wandb`` package is not installed.

A run resumed in place (``resume_in_place=true``, docs/reliability.md) continues its MLflow run: every run
names its MLflow runs in ``mlflow_runs.json`` in its folder (:func:`save_mlflow_runs`), the resume passes
that ``run_id`` on, and the params already logged keep their first value (MLflow refuses to change one).
Its ``metrics.csv`` keeps the rows of the steps before the checkpoint (:func:`keep_csv_rows_before`).
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import inspect
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, Logger, MLFlowLogger
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from airlab.contracts.options import ChecksOptions
from airlab.errors import ConfigError
from airlab.utils.atomic import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SQLITE_PREFIX = "sqlite:///"
#: Lightning's ``MLFlowLogger(experiment_name=...)`` default.
MLFLOW_DEFAULT_EXPERIMENT = inspect.signature(MLFlowLogger).parameters["experiment_name"].default
#: A run folder's file naming the MLflow run of each MLflow logger, by its entry name in ``logger``.
MLFLOW_RUNS_FILE = "mlflow_runs.json"
#: Lightning's MLFlowLogger cuts a param's value to this many characters.
MLFLOW_PARAM_LENGTH = 250

log = logging.getLogger(__name__)


class MLflowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger (same keys). A ``sqlite:///`` store and a plain-path
    ``artifact_location`` are made absolute (the store stays readable from any directory), and the
    store's folder is created: SQLite creates the database file but not the folder it lies in. A
    ``run_id`` (a run resumed in place) that the store does not hold starts a new run, with a warning."""

    def __init__(self, **kwargs: Any) -> None:
        uri = kwargs.get("tracking_uri")
        database: Path | None = None
        if isinstance(uri, str) and uri.startswith(SQLITE_PREFIX):
            database = Path(uri[len(SQLITE_PREFIX) :]).absolute()
            database.parent.mkdir(parents=True, exist_ok=True)
            kwargs["tracking_uri"] = f"{SQLITE_PREFIX}{database}"
        location = kwargs.get("artifact_location")
        if isinstance(location, str) and "://" not in location and not location.startswith("file:"):
            kwargs["artifact_location"] = str(Path(location).absolute())
        if database is not None:
            experiment = kwargs.get("experiment_name", MLFLOW_DEFAULT_EXPERIMENT)
            self._prepare_store(database, experiment, kwargs.get("artifact_location"))
        if kwargs.get("run_id") is not None and kwargs.get("tracking_uri"):
            kwargs["run_id"] = continued_run(kwargs["tracking_uri"], kwargs["run_id"])
        super().__init__(**kwargs)

    def _prepare_store(self, database: Path, experiment: str, artifact_location: str | None) -> None:
        """Create the store's tables and the experiment under a file lock: the parallel jobs of a sweep
        (hydra/launcher=joblib) share one store, and two first runs must not both create them."""
        from filelock import FileLock
        from mlflow.tracking import MlflowClient

        with FileLock(f"{database}.lock"):
            client = MlflowClient(f"{SQLITE_PREFIX}{database}")
            if client.get_experiment_by_name(experiment) is None:
                client.create_experiment(experiment, artifact_location=artifact_location)


def continued_run(tracking_uri: str, run_id: str) -> str | None:
    """``run_id`` if the store at ``tracking_uri`` holds that run (marked running again), else None (a
    moved or deleted store, another ``tracking_uri``): the resumed run then starts a new MLflow run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        log.warning("MLflow: run %s is not in %s; logging to a new run", run_id, tracking_uri)
        return None
    if run.info.lifecycle_stage == "deleted":
        log.warning("MLflow: run %s was deleted; logging to a new run", run_id)
        return None
    client.update_run(run_id, status="RUNNING")
    log.info("MLflow: continuing run %s", run_id)
    return run_id


class WandbLogger(ChecksOptions, LightningWandbLogger):
    """Lightning's WandbLogger (same keys); the config check refuses it when wandb is not installed."""

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], prefix: str) -> None:
        """wandb is an optional dependency: say how to install it before any work starts."""
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(prefix, "wandb is not installed; pip install wandb (or use logger=mlflow)")


def _png_array(image: torch.Tensor) -> np.ndarray:
    """A CHW (or HW) float image in [0, 1] as an HWC uint8 array, as TensorBoard encodes it."""
    array = image.detach().cpu().float().clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    if array.ndim == 3:
        array = array.transpose(1, 2, 0)
        if array.shape[2] == 1:
            array = array[:, :, 0]
    return array


def _figure_array(figure: Figure) -> np.ndarray:
    """A matplotlib figure rendered as an HWC uint8 RGB array."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()


class PictureWriter:
    """The part of TensorBoard's SummaryWriter interface that the picture callbacks use, for another
    tracker's logger. Histograms and projector embeddings have no counterpart there and are skipped."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def add_image(self, tag: str, image: torch.Tensor, step: int = 0, dataformats: str = "CHW") -> None:
        """Store ``image`` (CHW or HWC, in [0, 1]) as the picture ``tag`` of ``step``."""
        image = torch.as_tensor(image)
        if dataformats == "HWC":
            image = image.permute(2, 0, 1)
        self.store(tag, _png_array(image), step)

    def add_figure(self, tag: str, figure: Figure, step: int = 0, close: bool = True) -> None:
        """Store a matplotlib figure as the picture ``tag`` of ``step``."""
        self.store_figure(tag, figure, step)
        if close:
            import matplotlib.pyplot as plt

            plt.close(figure)

    def add_histogram(self, tag: str, values: Any, step: int = 0, **kwargs: Any) -> None:
        """No counterpart: skipped."""

    def add_embedding(self, mat: Any, **kwargs: Any) -> None:
        """No counterpart: skipped."""

    def store(self, tag: str, array: np.ndarray, step: int) -> None:
        """Store an HW or HWC uint8 picture."""
        raise NotImplementedError

    def store_figure(self, tag: str, figure: Figure, step: int) -> None:
        """Store a figure (as its rendered picture unless the tracker takes figures)."""
        self.store(tag, _figure_array(figure), step)


class MLflowPictureWriter(PictureWriter):
    """Pictures as PNG artifacts of the MLflow run: ``<tag>/step_<step>.png``."""

    logger: MLFlowLogger

    @staticmethod
    def artifact_file(tag: str, step: int) -> str:
        """Where the picture ``tag`` of ``step`` lies in the run's artifacts."""
        return f"{tag}/step_{int(step):07d}.png"

    def store(self, tag: str, array: np.ndarray, step: int) -> None:
        """``log_image`` to ``<tag>/step_<step>.png``."""
        self.logger.experiment.log_image(
            self.logger.run_id, array, artifact_file=self.artifact_file(tag, step)
        )

    def store_figure(self, tag: str, figure: Figure, step: int) -> None:
        """``log_figure`` to ``<tag>/step_<step>.png``."""
        self.logger.experiment.log_figure(self.logger.run_id, figure, self.artifact_file(tag, step))


class WandbPictureWriter(PictureWriter):
    """Pictures as ``wandb.Image`` media of the run, under their TensorBoard tags."""

    logger: LightningWandbLogger

    def store(self, tag: str, array: np.ndarray, step: int) -> None:
        """``log_image`` under ``tag`` at ``step``."""
        self.logger.log_image(key=tag, images=[array], step=int(step))


def mlflow_loggers(trainer: pl.Trainer) -> list[MLFlowLogger]:
    """The trainer's MLflow loggers."""
    return [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]


def tracker_picture_writers(trainer: pl.Trainer) -> list[PictureWriter]:
    """A picture writer per MLflow or wandb logger of the trainer."""
    writers: list[PictureWriter] = []
    for lg in trainer.loggers:
        if isinstance(lg, MLFlowLogger):
            writers.append(MLflowPictureWriter(lg))
        elif isinstance(lg, LightningWandbLogger):
            writers.append(WandbPictureWriter(lg))
    return writers


def log_config_params(trainer: pl.Trainer, params: Mapping[str, Any]) -> None:
    """The flattened config as the params of every MLflow run (TensorBoard gets it as hparams). A run
    continued in place keeps the values it has: MLflow refuses to change a param (the changed keys are
    logged; the run folder's .hydra/ holds the new config)."""
    if not trainer.is_global_zero:
        return
    for lg in mlflow_loggers(trainer):
        logged = lg.experiment.get_run(lg.run_id).data.params
        kept = {k: v for k, v in params.items() if k in logged}
        changed = sorted(k for k, v in kept.items() if logged[k] != str(v)[:MLFLOW_PARAM_LENGTH])
        if changed:
            log.info("MLflow keeps the first value of the params changed on resume: %s", ", ".join(changed))
        lg.log_hyperparams({k: v for k, v in params.items() if k not in logged})


def save_mlflow_runs(loggers: Mapping[str, Logger], run_dir: str | Path) -> None:
    """Name the MLflow run of each MLflow logger (by its entry name) in the run folder's
    ``mlflow_runs.json``, for a resume in place (:func:`saved_mlflow_runs`). Rank zero only."""
    runs = {name: lg.run_id for name, lg in loggers.items() if isinstance(lg, MLFlowLogger)}
    if runs:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(run_dir) / MLFLOW_RUNS_FILE, json.dumps(runs, indent=2, sort_keys=True))


def saved_mlflow_runs(run_dir: str | Path) -> dict[str, str]:
    """The MLflow run ids a run folder's ``mlflow_runs.json`` names, by logger entry; {} without one (a
    damaged file is ignored, with a warning: the resumed run then starts new MLflow runs)."""
    path = Path(run_dir) / MLFLOW_RUNS_FILE
    if not path.is_file():
        return {}
    try:
        runs = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("MLflow: %s is unreadable (%s); logging to new runs", path, err)
        return {}
    if not isinstance(runs, dict):
        return {}
    return {str(name): run_id for name, run_id in runs.items() if isinstance(run_id, str)}


def keep_csv_rows_before(logger: CSVLogger, step: int) -> int:
    """Resuming in place at ``step``: Lightning's CSVLogger deletes its folder's ``metrics.csv`` when it
    starts, so give it back the rows of the steps before ``step`` (the resumed run logs the later ones
    again). Rank zero only; returns the number of rows kept."""
    path = Path(logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE
    if not path.is_file():
        return 0
    with path.open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if (row.get("step") or "").strip()]
    kept = [row for row in rows if int(float(row["step"])) < step]
    with warnings.catch_warnings():  # "Previous log files ... will be deleted": the rows come back below
        warnings.filterwarnings("ignore", message=r".*Previous log files in this directory will be deleted")
        writer = logger.experiment  # starting the writer deletes the file
    for row in kept:
        values = {}
        for key, value in row.items():
            if key == "step" or value in (None, ""):
                continue
            with contextlib.suppress(ValueError):
                values[key] = float(value)
        writer.log_metrics(values, int(float(row["step"])))
    return len(kept)
