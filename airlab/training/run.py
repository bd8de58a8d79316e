"""One training run: fit, test with the final weights, the run-end analysis, and ``metrics.json``; and the
two tasks that are one training run: :func:`train` (``scripts/train.py``) and :func:`study_job` (one job
of ``scripts/study.py``'s multirun; the study's files are written when it ends,
:mod:`airlab.tracking.study_report`). The benchmark task times :func:`run_training`. ``metrics.json`` holds
what the run logged (``trainer.callback_metrics``: every ``val/*``, ``test/*``, ``train/elbo`` and
``throughput/*`` scalar) plus what the run itself measured: ``global_step``, ``epoch``, ``seed`` and the
wall times ``fit_time_s`` and ``wall_time_s``.

A resume goes to a new run folder, or continues its checkpoint's own with ``resume_in_place=true``
(:func:`airlab.resume.checkpoint.continue_in_place`): the loggers pick up after the checkpoint's step
(:func:`airlab.training.build.build_loggers`) and ``metrics.json`` is rewritten for the whole run.

Interrupting a run saves ``last.ckpt`` (:class:`airlab.resume.interval_checkpoint.IntervalCheckpoint`)
and exits without a traceback: exit code 143 (128 + 15) after SIGTERM, 130 (128 + 2) after SIGINT
(Ctrl+C), as a shell reports a process killed by that signal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from airlab import quiet_third_party_warnings
from airlab.callbacks.images import tensorboard_writers
from airlab.callbacks.run_end import RunEndCallback
from airlab.compat.torch_internals import summary_file_writer
from airlab.config import check_node, flatten_config, validate_config
from airlab.config.combinations import check_validation_interval
from airlab.config.tree import print_config_tree, save_config_tree
from airlab.contracts.model import GenerativeModel
from airlab.contracts.options import Range
from airlab.errors import AirlabError, OutputError, unwritable
from airlab.resume.checkpoint import check_resumable, continue_in_place, load_checkpoint, resolve_checkpoint
from airlab.tracking.sweep import finished_job_metrics, record_failed_job
from airlab.tracking.trackers import log_config_params, save_mlflow_runs
from airlab.training.build import build_datamodule, build_loggers, build_module, build_trainer, start_task
from airlab.training.svi_module import SVIModule
from airlab.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: Exit codes of a run stopped by a signal (after saving last.ckpt): 128 + the signal's number.
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

#: The logged metrics that metrics.json keeps (by prefix).
LOGGED_PREFIXES = ("val/", "test/", "train/elbo", "throughput/")

#: TensorBoard's custom-scalar charts for every run; the model adds a group of its own (``scalar_charts``).
#: The baseline loss carries the dataset scale N/B (about 1e11 on MNIST against a loss near -600 per
#: image), so it has a chart of its own: on one axis it would flatten the loss.
CUSTOM_SCALARS = {
    "ELBO": {
        "elbo": ["Multiline", [r"train/elbo", r"val/elbo", r"test/elbo", r"val/iwae"]],
        "loss": ["Multiline", [r"train/loss"]],
        "baseline loss": ["Multiline", [r"train/baseline_loss"]],
    },
    "Gradient variance": {
        "variance by group": ["Multiline", [r"grad_var/.*"]],
        "SNR by group": ["Multiline", [r"grad_snr/.*"]],
        "variance by term": ["Multiline", [r"grad_var_term/.*"]],
    },
}


def logged_metrics(*sources: dict[str, Any]) -> dict[str, float]:
    """The scalars of ``sources`` (callback metrics, test results) whose tags metrics.json keeps."""
    return {
        key: float(value)
        for source in sources
        for key, value in source.items()
        if key.startswith(LOGGED_PREFIXES)
    }


def custom_scalars(model: GenerativeModel) -> dict[str, dict[str, list[Any]]]:
    """airlab's charts, and the model's own (``GenerativeModel.scalar_charts``) in a group named after it."""
    layout = dict(CUSTOM_SCALARS)
    if model.scalar_charts:
        charts = {title: ["Multiline", list(tags)] for title, tags in model.scalar_charts.items()}
        layout[type(model).__name__] = charts
    return layout


def write_tensorboard_summary(trainer: pl.Trainer, module: SVIModule, metrics: dict[str, float]) -> None:
    """hparams (the module's resolved config, with the final metrics) and the custom-scalars layout."""
    from torch.utils.tensorboard.summary import hparams

    params = flatten_config(module.config)
    hparam_metrics = {k: v for k, v in metrics.items() if "/" in k}
    for writer in tensorboard_writers(trainer):
        for summary in hparams(params, hparam_metrics):
            summary_file_writer(writer).add_summary(summary)
        writer.add_custom_scalars(custom_scalars(module.model))
        writer.flush()


@contextlib.contextmanager
def exit_on_interrupt(trainer: pl.Trainer) -> Iterator[None]:
    """Turn a SIGTERM (Lightning's ``SIGTERMException``, a ``SystemExit`` whose code would be 0) into exit
    code 143 and a Ctrl+C (after which Lightning calls ``sys.exit(1)``) into 130, without a traceback."""
    try:
        yield
    except SIGTERMException:
        log.info("stopped by SIGTERM: exit code %d", EXIT_SIGTERM)
        raise SystemExit(EXIT_SIGTERM) from None
    except SystemExit as stop:
        if stop.code == 1 and trainer.state.status == TrainerStatus.INTERRUPTED:
            log.info("stopped by SIGINT: exit code %d", EXIT_SIGINT)
            raise SystemExit(EXIT_SIGINT) from None
        raise
    except KeyboardInterrupt:  # outside Lightning's handler (between fit and test)
        log.info("stopped by SIGINT: exit code %d", EXIT_SIGINT)
        raise SystemExit(EXIT_SIGINT) from None


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Validate ``cfg``, build everything, fit (resuming ``ckpt_path``), test the final weights unless
    ``test=false``, run the run-end callbacks, and write ``metrics.json`` (rank zero). Returns the metrics."""
    started = time.perf_counter()
    quiet_third_party_warnings()
    validate_config(cfg)
    # Printed at once, saved once the inputs passed their checks (a bad input leaves no run directory).
    tree = print_config_tree(cfg) if rank_zero_only.rank == 0 else None
    seed = start_task(cfg.get("seed"))
    ckpt_path = resolve_checkpoint(cfg)
    # Read before any work: a truncated or foreign file is one line, not a traceback from Lightning.
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path else None
    # A checkpoint of this run folder continues its logs (resume_in_place=true: refused unless it is).
    in_place = continue_in_place(cfg, ckpt_path, checkpoint)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    try:
        num_batches = len(datamodule.train_dataloader())
    except TypeError:  # an iterable dataset: Lightning checks the interval itself
        num_batches = None
    if num_batches is not None:
        check_validation_interval(cfg.trainer, num_batches)
    if checkpoint is not None:
        check_resumable(module, checkpoint, cfg, str(ckpt_path))
        del checkpoint  # Lightning reads it again in fit
    if tree is not None:
        save_config_tree(tree, cfg.paths.output_dir)
    loggers = build_loggers(cfg, in_place)
    trainer = build_trainer(cfg, loggers)
    # MLflow's params are written once, at the start, so that a killed run has them too; the run's id
    # is kept in the run folder for a resume in place.
    log_config_params(trainer, flatten_config(module.config))
    if trainer.is_global_zero:
        save_mlflow_runs(loggers, cfg.paths.output_dir)

    log.info("training %s with %s", type(module.model).__name__, type(module.estimator).__name__)
    fit_started = time.perf_counter()
    with exit_on_interrupt(trainer):
        # weights_only: Lightning's own read is as safe as load_checkpoint's (airlab.resume.checkpoint).
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        fit_time_s = time.perf_counter() - fit_started
        fit_metrics = dict(trainer.callback_metrics)
        test_metrics: dict[str, Any] = {}
        if cfg.get("test", True):
            results = trainer.test(module, datamodule=datamodule, verbose=False)
            test_metrics = results[0] if results else {}

    # Analysis that looks at the finished model (the VAE's t-SNE, ...) is not training time.
    for callback in trainer.callbacks:
        if isinstance(callback, RunEndCallback):
            callback.on_run_end(trainer, module, datamodule)

    metrics: dict[str, Any] = logged_metrics(fit_metrics, test_metrics)
    metrics.update(
        global_step=int(trainer.global_step),
        epoch=int(trainer.current_epoch),
        seed=seed,
        fit_time_s=round(fit_time_s, 3),
        wall_time_s=round(time.perf_counter() - started, 3),
    )
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        write_tensorboard_summary(trainer, module, metrics)
        log.info("final metrics: %s", json.dumps(metrics, sort_keys=True))
    return metrics


def train(cfg: DictConfig) -> float | None:
    """Fit, test with the final weights and write metrics.json in the run directory (see
    :func:`run_training`); returns ``metrics[optimized_metric]`` for Optuna and ``summary.csv``.
    With ``resume_sweep=true``, a sweep job that finished before is not trained again: its metrics are
    read back (:func:`airlab.tracking.sweep.finished_job_metrics`). A run that fails on a user's error or an
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


class StudySettings:
    """The ``study.*`` options; their values (and defaults) are in configs/study.yaml."""

    def __init__(self, metric: str, threshold: Annotated[float, Range(gt=0, le=1)]) -> None:
        self.metric = metric
        self.threshold = threshold


def study_job(cfg: DictConfig) -> float | None:
    """Check ``study.*``, then :func:`train`: with ``resume_sweep=true`` a finished job is skipped, not
    restored from its checkpoint (which would rewrite its ``metrics.json`` from a zero-step fit).
    Returns ``optimized_metric``."""
    check_node("study", StudySettings, cfg.get("study") or {})
    return train(cfg)
