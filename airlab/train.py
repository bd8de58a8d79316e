"""The training task: compose data, model, estimator and trainer from the config, fit, test, report."""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import pyro
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from airlab import quiet_third_party_warnings
from airlab.callbacks.images import tensorboard_writers
from airlab.callbacks.run_end import RunEndCallback
from airlab.callbacks.throughput import ThroughputMonitor
from airlab.config import flatten_config, validate_config
from airlab.config.validate import EXTRA_KEYS
from airlab.errors import ConfigError
from airlab.svi_module import SVIModule

log = logging.getLogger(__name__)

CUSTOM_SCALARS = {
    "ELBO": {
        "elbo": ["Multiline", [r"train/elbo", r"val/elbo", r"test/elbo", r"val/iwae"]],
        "loss": ["Multiline", [r"train/loss", r"train/baseline_loss"]],
    },
    "Counts": {
        "count accuracy": ["Multiline", [r"val/count_accuracy"]],
        "z_pres probability": ["Multiline", [r"train/z_pres_prob/.*"]],
    },
    "Gradient variance": {
        "variance by group": ["Multiline", [r"grad_var/.*"]],
        "SNR by group": ["Multiline", [r"grad_snr/.*"]],
        "variance by term": ["Multiline", [r"grad_var_term/.*"]],
    },
}


def resolve_seed(seed: int | None) -> int:
    """``null`` draws a fresh seed (logged, so the run can be repeated); 0 is a valid seed."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
        log.info("seed: %d (drawn at random; pass seed=%d to repeat this run)", seed, seed)
    return int(seed)


def resolve_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path``: a file, or ``last`` for the newest last.ckpt of this task's earlier runs."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        root = Path(cfg.paths.log_dir) / cfg.task_name
        here = Path(cfg.paths.output_dir).resolve()
        found = [p for p in root.glob("**/checkpoints/last.ckpt") if here not in p.resolve().parents]
        if not found:
            raise ConfigError("ckpt_path", f"'last' found no checkpoints/last.ckpt under {root}")
        newest = max(found, key=lambda p: p.stat().st_mtime)
        log.info("resuming from %s", newest)
        return str(newest)
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError("ckpt_path", f"file not found: {path}")
    return str(path)


def build_optimizer(optim_cfg: DictConfig):
    """A partial optimizer constructor. The group's keys that are no optimizer argument (``baseline_lr``,
    applied per param group by the module) are declared in ``airlab.config.validate.EXTRA_KEYS``."""
    kwargs = OmegaConf.to_container(optim_cfg, resolve=True)
    for key in EXTRA_KEYS["optim"]:
        kwargs.pop(key, None)
    return instantiate(kwargs)


def build_module(cfg: DictConfig, datamodule: pl.LightningDataModule) -> SVIModule:
    """The model (checked against the data), its bound estimator and the SVIModule that trains them."""
    model = instantiate(cfg.model, image_shape=datamodule.image_shape)
    model.check_annotations(datamodule)
    estimator = instantiate(cfg.elbo)
    estimator.bind(model)
    return SVIModule(
        model=model,
        estimator=estimator,
        optimizer=build_optimizer(cfg.optim),
        baseline_lr=cfg.optim.get("baseline_lr"),
        num_train=datamodule.num_train,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Build every entry of a dict-of-configs group (callbacks, loggers); null entries are skipped."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def write_tensorboard_summary(trainer: pl.Trainer, config: dict[str, Any], metrics: dict[str, float]) -> None:
    """hparams (the resolved config, with the final metrics) and the custom-scalars layout."""
    from torch.utils.tensorboard.summary import hparams

    params = flatten_config(config)
    hparam_metrics = {k: v for k, v in metrics.items() if "/" in k}
    for writer in tensorboard_writers(trainer):
        for summary in hparams(params, hparam_metrics):
            writer._get_file_writer().add_summary(summary)
        writer.add_custom_scalars(CUSTOM_SCALARS)
        writer.flush()


def collect_metrics(
    trainer: pl.Trainer, fit_metrics: dict[str, Any], test_metrics: dict[str, Any], started: float, seed: int
) -> dict[str, Any]:
    """The run's ``metrics.json``: val/test metrics, ``train/elbo``, step, timings, throughput, seed."""
    metrics: dict[str, Any] = {}
    for source in (fit_metrics, test_metrics):
        for key, value in source.items():
            if key.startswith(("val/", "test/", "train/elbo")):
                metrics[key] = float(value)
    metrics["global_step"] = int(trainer.global_step)
    metrics["epoch"] = int(trainer.current_epoch)
    metrics["wall_time_s"] = round(time.perf_counter() - started, 3)
    throughput = next((cb for cb in trainer.callbacks if isinstance(cb, ThroughputMonitor)), None)
    if throughput is not None and throughput.overall_steps_per_s is not None:
        metrics["throughput/steps_per_s"] = throughput.overall_steps_per_s
        metrics["train_time_s"] = round(throughput.train_time_s, 3)
    if throughput is not None and throughput.loop_time_s is not None:
        metrics["loop_time_s"] = round(throughput.loop_time_s, 3)
    metrics["seed"] = seed
    return metrics


def train(cfg: DictConfig) -> float | None:
    """Fit, test with the final weights, and write metrics.json in the run directory."""
    started = time.perf_counter()
    quiet_third_party_warnings()
    validate_config(cfg)
    pyro.clear_param_store()  # sweeps run many jobs in one process
    seed = resolve_seed(cfg.get("seed"))
    pl.seed_everything(seed, workers=True)
    ckpt_path = resolve_checkpoint(cfg)

    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not any(isinstance(cb, ThroughputMonitor) for cb in callbacks):
        callbacks.append(ThroughputMonitor())
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    log.info("training %s with %s", type(module.model).__name__, type(module.estimator).__name__)
    fit_started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
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

    metrics = collect_metrics(trainer, fit_metrics, test_metrics, started, seed)
    metrics["fit_time_s"] = round(fit_time_s, 3)
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        write_tensorboard_summary(trainer, module.config, metrics)
        log.info("final metrics: %s", json.dumps(metrics, sort_keys=True))
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None
