"""Side-by-side gradient variance of estimator configurations on one model and one minibatch.

A configuration is an option of the ``elbo`` group, overrides of its keys, and overrides of ``model.*``
keys (``model.baseline=none|decaying_avg|nvil`` for AIR). Every configuration starts from the same
weights (a fresh model drawn with ``seed``, or ``ckpt_path``); parameters that only some configurations
have (AIR's NVIL network) come from the checkpoint when it has them, else from a seeded
initialisation. Baselines are warmed up before measuring (on training batches, or on the measured
minibatch), since an untrained baseline reduces nothing. Outputs, in the run dir:
``variance_report.json``, ``.md`` and ``.png``, and the table and figure in ``tensorboard/``.
See docs/variance.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import pyro
import torch
from omegaconf import DictConfig, OmegaConf

from airlab.config import validate_config
from airlab.errors import CheckpointError, ConfigError
from airlab.resume.checkpoint import load_checkpoint, load_weights, model_state, resolve_checkpoint
from airlab.resume.training_state import CONFIG_KEY
from airlab.training.build import build_datamodule, build_model, build_module, model_class, start_task
from airlab.variance.configurations import (
    check_report,
    configuration_cfg,
    parse_configurations,
    warm_up_baselines,
    warmup_batches,
)
from airlab.variance.estimate import gradient_variance
from airlab.variance.outputs import write_outputs

log = logging.getLogger(__name__)


def run_variance_report(cfg: DictConfig) -> dict[str, Any]:
    """Measure the gradient variance of every configuration on one batch, from the same weights; write
    the report and return it."""
    validate_config(cfg)
    report = cfg.report
    device = check_report(report)
    configurations = parse_configurations(report)
    seed = 0 if cfg.get("seed") is None else int(cfg.seed)
    ckpt_path = resolve_checkpoint(cfg)
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path else None

    start_task(seed)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    model_cfg = cfg.model
    if checkpoint is not None and checkpoint[CONFIG_KEY].get("model"):
        model_cfg = OmegaConf.create(checkpoint[CONFIG_KEY]["model"])
        log.info("model config from the checkpoint: %s", OmegaConf.to_container(model_cfg))
    keys = model_class(model_cfg).inputs
    batch = next(iter(datamodule.train_dataloader()))
    inputs = tuple(batch[key].to(device) for key in keys)
    if checkpoint is not None:
        base_state, step = model_state(checkpoint), int(checkpoint.get("global_step", 0))
        if not base_state:
            raise CheckpointError(f"ckpt_path: {ckpt_path} holds no model.* weights")
    else:
        base_state, step = build_model(model_cfg, datamodule).state_dict(), 0

    results: dict[str, Any] = {}
    details: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for conf in configurations:
        conf_cfg = configuration_cfg(cfg, model_cfg, conf)
        k, base = conf.elbo_overrides.get("num_particles"), report.get("particles_of")
        if conf.name == f"{base}_k{k}" and details.get(base, {}).get("num_particles") == k:
            conf_cfg = f"the same as {base}, which has K = {k}"
        if isinstance(conf_cfg, str):
            skipped[conf.name] = conf_cfg
            log.info("skipping %s: %s", conf.name, conf_cfg)
            continue
        start_task(seed)
        try:
            module = build_module(conf_cfg, datamodule)
        except ConfigError as err:
            if not err.key.startswith(("elbo", "model")):
                raise
            skipped[conf.name] = str(err)
            log.info("skipping %s: %s", conf.name, err)
            continue
        load_weights(module.model, base_state, conf.name)
        module.to(device).train()
        if checkpoint is not None:  # estimator state, e.g. decaying-average baselines
            module.on_load_checkpoint(checkpoint)
            module.resume_state.restore_param_store(module.device)
        module.model.on_train_step(step)
        scale = module.loss_scale(inputs[0].shape[0])
        started = time.perf_counter()
        batches = warmup_batches(datamodule, inputs, keys, report.baseline_warmup_data, device)
        warmup = warm_up_baselines(module, batches, scale, int(report.baseline_warmup_steps))
        warmup_s = time.perf_counter() - started
        result = gradient_variance(
            module.estimator,
            module.model_fn,
            module.guide_fn,
            inputs,
            module.model.parameter_groups(),
            num_samples=int(report.num_samples),
            seed=seed,
            scale=scale,
            terms=bool(report.terms),
            module=module.model,
        )
        results[conf.name] = result.as_dict()
        details[conf.name] = {
            **dataclasses.asdict(conf),
            "num_particles": module.estimator.num_particles,
            "baseline_warmup_steps": warmup,
            "warmup_s": round(warmup_s, 3),
            "measure_s": round(time.perf_counter() - started - warmup_s, 3),
            "unused_groups": result.unused_groups,
        }
        log.info("%s: %s", conf.name, json.dumps(results[conf.name]))
        del module
    pyro.clear_param_store()

    output = {
        "estimators": results,
        "config": {
            "model": OmegaConf.to_container(model_cfg, resolve=True),
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "ckpt_path": ckpt_path,
            "global_step": step,
            "batch_size": int(inputs[0].shape[0]),
            "num_samples": int(report.num_samples),
            "seed": seed,
            "report": OmegaConf.to_container(report, resolve=True),
            "device": str(device),
            "configurations": details,
            "skipped": skipped,
            "torch": torch.__version__,
            "pyro": pyro.__version__,
        },
    }
    write_outputs(output, Path(cfg.paths.output_dir))
    return output
