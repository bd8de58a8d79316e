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

import copy
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pyro
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from airlab.config import OneOf, Range, check_node, resolve_device, validate_config
from airlab.errors import CheckpointError, ConfigError
from airlab.evaluation.checkpoint import load_checkpoint, model_state
from airlab.svi_module import CONFIG_KEY, SVIModule
from airlab.train import build_module, resolve_checkpoint
from airlab.variance import gradient_variance
from airlab.variance_outputs import write_outputs

log = logging.getLogger(__name__)

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGURATION_KEYS = ("elbo", "elbo_overrides", "model_overrides")
#: An override that switches a feature off applies to a model that lacks the feature altogether.
OFF_VALUES = (None, "none", False)


@dataclasses.dataclass
class Configuration:
    """One estimator configuration to measure: an ``elbo`` option and overrides of it and of the model."""

    name: str
    elbo: str
    elbo_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


# -- the report section ----------------------------------------------------------------------------


def config_dirs() -> list[Path]:
    """Where group options live: Hydra's file sources for this run, then the repository's configs/."""
    dirs = []
    try:
        from hydra.core.hydra_config import HydraConfig

        dirs = [Path(s.path) for s in HydraConfig.get().runtime.config_sources if s.schema == "file"]
    except ValueError:  # no Hydra run (a library call)
        pass
    return [*dirs, DEFAULT_CONFIG_DIR]


def load_group_option(group: str, option: str, key: str) -> DictConfig:
    """The ``option`` YAML of config ``group``; refuses an unknown option naming ``key``."""
    for directory in config_dirs():
        path = directory / group / f"{option}.yaml"
        if path.is_file():
            return OmegaConf.load(path)
    options = sorted({p.stem for d in config_dirs() for p in (d / group).glob("*.yaml")})
    raise ConfigError(key, f"{option!r} is not valid; choose one of: {', '.join(options)}")


def parse_configurations(report: DictConfig) -> list[Configuration]:
    """The ``report.estimators`` entries, then ``report.particles_of`` with K particles for each K."""
    configurations = []
    for name, entry in (report.estimators or {}).items():
        key = f"report.estimators.{name}"
        if entry is None:  # removed with report.estimators.<name>=null
            continue
        entry = OmegaConf.to_container(entry, resolve=True)
        if not isinstance(entry, dict) or "elbo" not in entry:
            raise ConfigError(key, "must be a mapping with an 'elbo' option, e.g. {elbo: tracegraph}")
        unknown = sorted(set(entry) - set(CONFIGURATION_KEYS))
        if unknown:
            raise ConfigError(
                f"{key}.{unknown[0]}", f"unknown key; valid keys: {', '.join(CONFIGURATION_KEYS)}"
            )
        overrides = (entry.get("elbo_overrides") or {}, entry.get("model_overrides") or {})
        configurations.append(Configuration(str(name), str(entry["elbo"]), *overrides))
    base = next((c for c in configurations if c.name == report.get("particles_of")), None)
    particles = list(report.get("particles") or [])
    if particles and base is None:
        valid = ", ".join(c.name for c in configurations)
        raise ConfigError("report.particles_of", f"{report.get('particles_of')!r} is not one of: {valid}")
    for k in particles:
        if not isinstance(k, int) or k < 1:
            raise ConfigError("report.particles", f"{k!r} is not a positive integer")
        if k == base.elbo_overrides.get("num_particles", 1):
            continue  # that is the base configuration itself
        overrides = {**base.elbo_overrides, "num_particles": k}
        configurations.append(
            Configuration(f"{base.name}_k{k}", base.elbo, overrides, dict(base.model_overrides))
        )
    return configurations


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    """The ``report.*`` options; their values (and defaults) are in configs/variance_report.yaml."""

    num_samples: Annotated[int, Range(ge=2)]
    terms: bool
    baseline_warmup_steps: Annotated[int, Range(ge=0)]
    baseline_warmup_data: Annotated[str, OneOf(("train", "minibatch"))]
    device: Annotated[str, OneOf(("auto", "cpu", "cuda"))]
    estimators: dict[str, Any] | None  # checked by parse_configurations
    particles: list[Any] | None  # checked by parse_configurations
    particles_of: str | None


def check_report(report: DictConfig) -> torch.device:
    """Validate ``report.*``; returns the device to measure on."""
    check_node("report", ReportSettings, report)
    return resolve_device(report.device, "report.device")


def configuration_cfg(cfg: DictConfig, model_cfg: DictConfig, conf: Configuration) -> DictConfig | str:
    """The full config for one configuration, or the reason it does not apply to this model."""
    key = f"report.estimators.{conf.name}"
    elbo = load_group_option("elbo", conf.elbo, f"{key}.elbo")
    for name, value in conf.elbo_overrides.items():
        if name not in elbo:
            raise ConfigError(f"{key}.elbo_overrides.{name}", f"elbo={conf.elbo} has no key {name!r}")
        elbo[name] = value
    model = copy.deepcopy(model_cfg)
    model_name = str(model.get("_target_", "model")).rsplit(".", 1)[-1].lower()
    for name, value in conf.model_overrides.items():
        if name in model:
            model[name] = value
        elif value not in OFF_VALUES:
            return f"model={model_name} has no key model.{name} (asked for {name}={value})"
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.elbo = elbo
        out.model = model
    validate_config(out)
    return out


# -- model, minibatch, baselines -------------------------------------------------------------------


def load_weights(module: SVIModule, state: dict[str, torch.Tensor], name: str) -> None:
    """Load the base weights into ``module``'s model; missing and unused tensors are logged, not refused."""
    try:
        missing, unexpected = module.model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        detail = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointError(f"ckpt_path: weights do not fit configuration {name}: {detail}") from None
    if missing:
        log.info(
            "%s: %d tensors not in the base weights, freshly initialised: %s", name, len(missing), missing[:5]
        )
    if unexpected:
        log.info("%s: %d tensors of the base weights unused: %s", name, len(unexpected), unexpected[:5])


def warm_up_baselines(module: SVIModule, batches: Iterator[torch.Tensor], scale: float, steps: int) -> int:
    """Train only the baselines, one batch of ``batches`` per step; returns the number of steps run."""
    estimator = module.estimator
    if steps <= 0 or not getattr(estimator, "uses_baselines", False):
        return 0
    groups = [group for group in module.parameter_groups() if group["name"] == "baseline"]
    params = groups[0]["params"] if groups else []
    optimizer = module.optimizer_factory(groups) if groups else None
    store = pyro.get_param_store()
    for step in range(steps):
        images = next(batches)
        if optimizer is None:
            with torch.no_grad():  # a decaying average only needs the calls
                estimator(module.model_fn, module.guide_fn, images, scale=scale)
            if step == 0 and not any(n.startswith("__baseline_avg_downstream_cost_") for n in store.keys()):
                return 0  # no baselines in this configuration
            continue
        out = estimator(module.model_fn, module.guide_fn, images, scale=scale)
        # The surrogate reaches the baseline parameters only through the baselines' squared error.
        grads = torch.autograd.grad(out.surrogate, params, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps


def warmup_batches(
    datamodule, images: torch.Tensor, source: str, device: torch.device
) -> Iterator[torch.Tensor]:
    """``train``: successive training batches, as in training. ``minibatch``: the measured one, again and
    again, which fits a decaying average to each of its images: a baseline training never has."""
    if source == "minibatch":
        yield from itertools.repeat(images)
    while True:
        for batch in datamodule.train_dataloader():
            yield batch["image"].to(device)


# -- the report ------------------------------------------------------------------------------------


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

    pyro.clear_param_store()
    pl.seed_everything(seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    images = next(iter(datamodule.train_dataloader()))["image"].to(device)
    model_cfg = cfg.model
    if checkpoint is not None and checkpoint[CONFIG_KEY].get("model"):
        model_cfg = OmegaConf.create(checkpoint[CONFIG_KEY]["model"])
        log.info("model config from the checkpoint: %s", OmegaConf.to_container(model_cfg))
    if checkpoint is not None:
        base_state, step = model_state(checkpoint), int(checkpoint.get("global_step", 0))
        if not base_state:
            raise CheckpointError(f"ckpt_path: {ckpt_path} holds no model.* weights")
    else:
        base_state, step = instantiate(model_cfg, image_shape=datamodule.image_shape).state_dict(), 0

    results: dict[str, Any] = {}
    details: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for conf in configurations:
        conf_cfg = configuration_cfg(cfg, model_cfg, conf)
        if isinstance(conf_cfg, str):
            skipped[conf.name] = conf_cfg
            log.info("skipping %s: %s", conf.name, conf_cfg)
            continue
        pyro.clear_param_store()
        pl.seed_everything(seed, workers=True)
        try:
            module = build_module(conf_cfg, datamodule)
        except ConfigError as err:
            if not err.key.startswith(("elbo", "model")):
                raise
            skipped[conf.name] = str(err)
            log.info("skipping %s: %s", conf.name, err)
            continue
        load_weights(module, base_state, conf.name)
        module.to(device).train()
        if checkpoint is not None:  # estimator state, e.g. decaying-average baselines
            module.on_load_checkpoint(checkpoint)
            module.restore_param_store()
        module.model.on_train_step(step)
        scale = module.loss_scale(images.shape[0])
        started = time.perf_counter()
        batches = warmup_batches(datamodule, images, report.baseline_warmup_data, device)
        warmup = warm_up_baselines(module, batches, scale, int(report.baseline_warmup_steps))
        warmup_s = time.perf_counter() - started
        result = gradient_variance(
            module.estimator,
            module.model_fn,
            module.guide_fn,
            (images,),
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
            "batch_size": int(images.shape[0]),
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
