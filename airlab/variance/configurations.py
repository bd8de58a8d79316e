"""The variance report's estimator configurations, and the baseline warm-up before measuring.

A configuration is an option of the ``elbo`` group, overrides of its keys, and overrides of ``model.*``
keys (``model.baseline=none|decaying_avg|nvil`` for AIR); ``report.estimators`` lists them (see
configs/variance_report.yaml). The ``elbo`` option is composed by Hydra, with the running app's search
path, never read from YAML files here.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Iterator
from typing import Annotated, Any

import pyro
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from airlab.config import OneOf, Range, check_node, resolve_device, validate_config
from airlab.config.compose import compose_group_option
from airlab.errors import ConfigError
from airlab.training.svi_module import SVIModule

#: The config the report's tasks compose (configs/variance_report.yaml).
CONFIG_NAME = "variance_report"
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
        if k == base.elbo_overrides.get("num_particles"):
            continue  # that is the base configuration itself (its K set explicitly)
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
    snr_statistic: Annotated[str, OneOf(("snr", "snr_per_dim"))]


def check_report(report: DictConfig) -> torch.device:
    """Validate ``report.*``; returns the device to measure on."""
    check_node("report", ReportSettings, report)
    return resolve_device(report.device, "report.device")


def configuration_cfg(cfg: DictConfig, model_cfg: DictConfig, conf: Configuration) -> DictConfig | str:
    """The full config for one configuration, or the reason it does not apply to this model."""
    key = f"report.estimators.{conf.name}"
    elbo = compose_group_option(CONFIG_NAME, "elbo", conf.elbo, f"{key}.elbo")
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


def warm_up_baselines(
    module: SVIModule, batches: Iterator[tuple[torch.Tensor, ...]], scale: float, steps: int
) -> int:
    """Train only the baselines, one batch of ``batches`` per step; returns the number of steps run."""
    estimator = module.estimator
    if steps <= 0 or not estimator.uses_baselines:
        return 0
    groups = [group for group in module.parameter_groups() if group["name"] == "baseline"]
    params = groups[0]["params"] if groups else []
    optimizer = module.optimizer_factory(groups) if groups else None
    store = pyro.get_param_store()
    for step in range(steps):
        inputs = next(batches)
        if optimizer is None:
            with torch.no_grad():  # a decaying average only needs the calls
                estimator(module.model_fn, module.guide_fn, *inputs, scale=scale)
            if step == 0 and not any(n.startswith("__baseline_avg_downstream_cost_") for n in store.keys()):
                return 0  # no baselines in this configuration
            continue
        out = estimator(module.model_fn, module.guide_fn, *inputs, scale=scale)
        # The surrogate reaches the baseline parameters only through the baselines' squared error.
        grads = torch.autograd.grad(out.surrogate, params, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps


def warmup_batches(
    datamodule: pl.LightningDataModule,
    inputs: tuple[torch.Tensor, ...],
    keys: tuple[str, ...],
    source: str,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """``train``: successive training batches, as in training. ``minibatch``: the measured one, again and
    again, which fits a decaying average to each of its images: a baseline training never has."""
    if source == "minibatch":
        yield from itertools.repeat(inputs)
    while True:
        for batch in datamodule.train_dataloader():
            yield tuple(batch[key].to(device) for key in keys)
