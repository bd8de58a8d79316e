"""The one builder every task uses: seed, data, model, estimator, the SVIModule and the trainer.

Tasks (``airlab/tasks/``) compose a config, validate it and call these; nothing here reads a config key
that its group's class does not declare, and nothing here runs any training.
"""

from __future__ import annotations

import logging
import random
from functools import partial
from typing import Any

import pyro
import pytorch_lightning as pl
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from airlab.config.validate import EXTRA_KEYS, signature_options
from airlab.contracts.model import GenerativeModel
from airlab.data.in_memory import InMemoryDataModule
from airlab.data.spec import DataSpec, describe_data
from airlab.errors import ConfigError
from airlab.resume.checkpoint import InPlace
from airlab.tracking.trackers import keep_csv_rows_before, saved_mlflow_runs
from airlab.training.ddp import install as install_ddp_child_command
from airlab.training.svi_module import SVIModule

log = logging.getLogger(__name__)


def resolve_seed(seed: int | None) -> int:
    """``null`` draws a fresh seed (logged, so the run can be repeated); 0 is a valid seed."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
        log.info("seed: %d (drawn at random; pass seed=%d to repeat this run)", seed, seed)
    return int(seed)


def start_task(seed: int | None) -> int:
    """A clean slate for one task: an empty Pyro param store (sweeps run many jobs in one process) and
    every RNG seeded (torch, numpy, python, dataloader workers). Returns the seed used."""
    pyro.clear_param_store()
    seed = resolve_seed(seed)
    pl.seed_everything(seed, workers=True)
    return seed


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The ``data`` group's LightningDataModule (nothing is read from disk yet)."""
    return instantiate(cfg.data)


def model_class(model_cfg: DictConfig) -> type[GenerativeModel]:
    """The class a ``model`` node builds; one line naming ``model._target_`` when it is no model."""
    target = get_object(str(model_cfg._target_))
    if not (isinstance(target, type) and issubclass(target, GenerativeModel)):
        raise ConfigError(
            "model._target_",
            f"{model_cfg._target_} is not a subclass of airlab.GenerativeModel (docs/your_model.md)",
        )
    return target


def build_model(
    model_cfg: DictConfig, datamodule: pl.LightningDataModule, spec: DataSpec | None = None
) -> GenerativeModel:
    """The model of a ``model`` group node, checked against the data's batch keys (its declared
    ``inputs`` and the annotations its metrics need), with one item's shape of its first input passed
    as ``data_shape`` or ``image_shape`` to a constructor that takes one."""
    spec = describe_data(datamodule) if spec is None else spec
    cls = model_class(model_cfg)
    cls.check_data_keys(spec.keys, type(datamodule).__name__)
    shape = spec.shapes.get(cls.inputs[0])
    takes = signature_options(cls)
    filled = {name: shape for name in ("data_shape", "image_shape") if name in takes and shape is not None}
    model = instantiate(model_cfg, **filled)
    if cls.initialises_from_data:
        model.initialise_from_data(*training_inputs(datamodule, cls.inputs))
    return model


def training_inputs(datamodule: pl.LightningDataModule, keys: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """The named tensors of every training item of an in-memory data module, else of its first training
    batch: what a model that declares ``initialises_from_data`` fits its starting point to."""
    if isinstance(datamodule, InMemoryDataModule):
        dataset = datamodule.datasets["train"]
        batch = dataset.__getitems__(list(range(len(dataset))))
    else:
        batch = next(iter(datamodule.train_dataloader()))
    return tuple(batch[key] for key in keys)


def build_optimizer(optim_cfg: DictConfig) -> partial:
    """A partial optimizer constructor. The group's keys that are no optimizer argument (``baseline_lr``,
    applied per param group by the module) are declared in ``airlab.config.validate.EXTRA_KEYS``."""
    kwargs = OmegaConf.to_container(optim_cfg, resolve=True)
    for key in EXTRA_KEYS["optim"]:
        kwargs.pop(key, None)
    return instantiate(kwargs)


def build_module(
    cfg: DictConfig, datamodule: pl.LightningDataModule, model: GenerativeModel | None = None
) -> SVIModule:
    """The SVIModule that trains ``model`` (built from ``cfg.model`` when not given) with the ``elbo``
    group's estimator, bound to the model, and the ``optim`` group's optimizer."""
    spec = describe_data(datamodule)
    model = build_model(cfg.model, datamodule, spec) if model is None else model
    estimator = instantiate(cfg.elbo)
    estimator.bind(model)
    return SVIModule(
        model=model,
        estimator=estimator,
        optimizer=build_optimizer(cfg.optim),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        baseline_lr=cfg.optim.get("baseline_lr"),
        num_train=spec.num_train,
        config=OmegaConf.to_container(cfg, resolve=True),
        max_consecutive_bad=cfg.max_consecutive_bad,
        validate_args_steps=cfg.validate_args_steps,
    )


def module_and_first_batch(cfg: DictConfig, seed: int | None) -> tuple[SVIModule, tuple[Any, ...]]:
    """For measurements outside a Trainer: a fresh task's SVIModule in training mode, and the model's
    inputs from the first training batch."""
    start_task(seed)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    module.train()
    return module, module.model.batch_inputs(next(iter(datamodule.train_dataloader())))


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Build every entry of a dict-of-configs group (callbacks, loggers); null entries are skipped."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def build_loggers(cfg: DictConfig, in_place: InPlace | None = None) -> dict[str, Logger]:
    """The ``logger`` group's loggers by entry name (null entries skipped). A run resumed in place
    (:func:`airlab.resume.checkpoint.continue_in_place`) continues the run's logs after the checkpoint's
    step: TensorBoard hides the events logged from that step on (SummaryWriter's ``purge_step``: one
    curve, no step twice), MLflow logs to the run that ``mlflow_runs.json`` names (``run_id``), and CSV
    keeps its rows before that step."""
    runs = saved_mlflow_runs(in_place.run_dir) if in_place is not None else {}
    loggers: dict[str, Logger] = {}
    for name, node in (cfg.get("logger") or {}).items():
        if node is None or "_target_" not in node:
            continue
        extra: dict[str, Any] = {}
        target = get_object(str(node._target_))
        if in_place is not None and isinstance(target, type):
            if issubclass(target, TensorBoardLogger):
                extra["purge_step"] = in_place.global_step  # TensorBoardLogger's kwargs go to SummaryWriter
            if issubclass(target, MLFlowLogger) and str(name) in runs:
                extra["run_id"] = runs[str(name)]
        logger = instantiate(node, **extra)
        if in_place is not None and isinstance(logger, CSVLogger) and rank_zero_only.rank == 0:
            keep_csv_rows_before(logger, in_place.global_step)
        loggers[str(name)] = logger
    return loggers


def build_trainer(cfg: DictConfig, loggers: dict[str, Logger] | None = None) -> pl.Trainer:
    """The ``trainer`` group's Trainer with the ``callbacks`` group's entries and ``loggers`` (by default
    the ``logger`` group's, :func:`build_loggers`). The processes DDP starts run this job in its run
    directory (:mod:`airlab.training.ddp`)."""
    install_ddp_child_command()
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = build_loggers(cfg) if loggers is None else loggers
    return instantiate(cfg.trainer, callbacks=callbacks, logger=list(loggers.values()) or False)
