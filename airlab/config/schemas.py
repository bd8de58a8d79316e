"""Typed schemas for each config group option, keyed by the ``_target_`` they build.

Field types are enforced by OmegaConf; the helpers from ``validation`` add ranges and choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airlab.config.validation import at_least, between, greater_than, list_field, one_of
from airlab.data.batched import BINARIZE_OPTIONS
from airlab.data.mnist import SOURCES
from airlab.data.multimnist import OVERLAP_POLICIES
from airlab.data.multimnist import SOURCES as MULTIMNIST_SOURCES
from airlab.errors import ConfigError
from airlab.estimators import DEPENDENCIES
from airlab.models.air import ANNEALING, BASELINES, PRIOR_TYPES


@dataclass
class TopLevel:
    seed: int | None = between(None, 0, 2**32 - 1, optional=True)
    task_name: str = "train"
    ckpt_path: str | None = None
    optimized_metric: str | None = None
    tags: Any = None


# -- data -------------------------------------------------------------------------------------------


@dataclass
class DigitData:
    """Keys shared by the data modules built on MNIST digits."""

    _target_: str = ""
    source: str = "auto"
    data_dir: str = "data"
    batch_size: int = at_least(256, 1)
    eval_batch_size: int | None = at_least(None, 1, optional=True)
    num_workers: int = at_least(0, 0)
    pin_memory: bool | None = None
    split_seed: int = at_least(0, 0)
    val_fraction: float = between(0.1, 0.0, 1.0, high_open=True)
    test_fraction: float = between(0.1, 0.0, 1.0, high_open=True)
    subset_size: int | None = at_least(None, 1, optional=True)
    download_timeout: float = greater_than(10.0, 0)

    def check(self, prefix: str) -> None:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"{prefix}.val_fraction",
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} leaves no "
                "training digits; their sum must be < 1",
            )


@dataclass
class MNISTData(DigitData):
    _target_: str = "airlab.data.mnist.MNISTDataModule"
    source: str = one_of("auto", SOURCES)
    binarize: str = one_of("none", BINARIZE_OPTIONS)
    images: str | None = None
    labels: str | None = None


@dataclass
class MultiMNISTData(DigitData):
    _target_: str = "airlab.data.multimnist.MultiMNISTDataModule"
    source: str = one_of("auto", MULTIMNIST_SOURCES)
    batch_size: int = at_least(64, 1)
    # every canvas split needs digits of its own
    val_fraction: float = between(0.1, 0.0, 1.0, low_open=True, high_open=True)
    test_fraction: float = between(0.1, 0.0, 1.0, low_open=True, high_open=True)
    max_digits: int = at_least(2, 1)
    image_size: int = at_least(50, 8)
    num_images: int = at_least(60000, 1)
    num_val_images: int = at_least(5000, 1)
    num_test_images: int = at_least(5000, 1)
    seed: int = between(0, 0, 2**32 - 1)
    scale_mean: float = greater_than(1.3, 0)
    scale_sd: float = at_least(0.1, 0)
    overlap: str = one_of("redraw", OVERLAP_POLICIES)

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if self.scale_mean * self.image_size < 28:
            raise ConfigError(
                f"{prefix}.scale_mean",
                f"{self.scale_mean:g} makes digits {28 / self.scale_mean:.1f} px wide, more than the "
                f"{self.image_size} px canvas ({prefix}.image_size); need >= {28 / self.image_size:.3g}",
            )


# -- models -----------------------------------------------------------------------------------------


@dataclass
class VAEModel:
    _target_: str = "airlab.models.vae.VAE"
    z_dim: int = at_least(50, 1)
    hidden_dim: int = at_least(400, 1)
    scale_to_dataset: bool = False


@dataclass
class AIRModel:
    _target_: str = "airlab.models.air.AIR"
    max_steps: int = at_least(3, 1)
    z_what_dim: int = at_least(50, 1)
    window_size: int = at_least(28, 2)
    rnn_hidden: int = at_least(256, 1)
    encoder_hidden: list[int] = list_field([200])
    decoder_hidden: list[int] = list_field([200])
    predict_hidden: list[int] = list_field([200])
    decoder_sigmoid: bool = True
    decoder_output_bias: float = -2.0
    likelihood_sd: float = greater_than(0.3, 0)
    scale_prior_mean: float = greater_than(3.0, 0)
    scale_prior_sd: float = greater_than(0.1, 0)
    pos_prior_mean: float = 0.0
    pos_prior_sd: float = greater_than(1.0, 0)
    z_pres_prior: float = between(0.01, 0.0, 1.0, low_open=True, high_open=True)
    z_pres_prior_type: str = one_of("bernoulli", PRIOR_TYPES)
    z_pres_anneal: str = one_of("none", ANNEALING)
    anneal_begin: int = at_least(0, 0)
    anneal_duration: int = at_least(100_000, 1)
    anneal_target: float = between(1e-5, 0.0, 1.0, low_open=True, high_open=True)
    baseline: str = one_of("nvil", BASELINES)
    baseline_beta: float = between(0.9, 0.0, 1.0, high_open=True)
    baseline_scalar: float = greater_than(1.0, 0)
    baseline_rnn_hidden: int = at_least(256, 1)
    baseline_hidden: list[int] = list_field([200])
    scale_to_dataset: bool = True

    def check(self, prefix: str) -> None:
        for name in ("encoder_hidden", "decoder_hidden", "predict_hidden", "baseline_hidden"):
            sizes = getattr(self, name)
            if not all(size >= 1 for size in sizes):
                raise ConfigError(f"{prefix}.{name}", f"{sizes} is not valid; layer sizes must be >= 1")


# -- estimators -------------------------------------------------------------------------------------


@dataclass
class Elbo:
    _target_: str = "airlab.estimators.TraceEstimator"
    num_particles: int = at_least(1, 1)
    vectorize_particles: bool = False
    max_plate_nesting: int | None = at_least(None, 0, optional=True)


@dataclass
class TraceGraphElbo(Elbo):
    _target_: str = "airlab.estimators.TraceGraphEstimator"
    dependencies: str = one_of("declared", DEPENDENCIES)


@dataclass
class JitElbo(Elbo):
    ignore_jit_warnings: bool = True


@dataclass
class JitTraceGraphElbo(JitElbo, TraceGraphElbo):
    _target_: str = "airlab.estimators.JitTraceGraphEstimator"


@dataclass
class RenyiElbo(Elbo):
    alpha: float = at_least(0.5, 0.0)

    def check(self, prefix: str) -> None:
        if self.alpha == 1.0:
            raise ConfigError(f"{prefix}.alpha", "1.0 is the ELBO itself; use elbo=trace, or alpha != 1")


# -- optimizers -------------------------------------------------------------------------------------


@dataclass
class Optim:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = greater_than(1e-3, 0)
    baseline_lr: float | None = greater_than(None, 0, optional=True)
    weight_decay: float = at_least(0.0, 0)


@dataclass
class Adam(Optim):
    betas: list[float] = list_field([0.9, 0.999])
    eps: float = greater_than(1e-8, 0)
    fused: bool | None = None

    def check(self, prefix: str) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{prefix}.betas", f"{self.betas} is not valid; need two values in [0, 1)")


@dataclass
class ClippedAdam(Adam):
    _target_: str = "pyro.optim.clipped_adam.ClippedAdam"
    clip_norm: float = greater_than(10.0, 0)
    lrd: float = between(1.0, 0.0, 1.0, low_open=True)


@dataclass
class RMSprop(Optim):
    _target_: str = "torch.optim.RMSprop"
    alpha: float = between(0.99, 0.0, 1.0)
    eps: float = greater_than(1e-8, 0)
    momentum: float = at_least(0.0, 0)
    centered: bool = False


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "airlab.data.mnist.MNISTDataModule": MNISTData,
        "airlab.data.multimnist.MultiMNISTDataModule": MultiMNISTData,
    },
    "model": {"airlab.models.vae.VAE": VAEModel, "airlab.models.air.AIR": AIRModel},
    "elbo": {
        "airlab.estimators.TraceEstimator": Elbo,
        "airlab.estimators.TraceGraphEstimator": TraceGraphElbo,
        "airlab.estimators.MeanFieldEstimator": Elbo,
        "airlab.estimators.JitTraceEstimator": JitElbo,
        "airlab.estimators.JitTraceGraphEstimator": JitTraceGraphElbo,
        "airlab.estimators.RenyiEstimator": RenyiElbo,
        "airlab.estimators.IWAEEstimator": Elbo,
    },
    "optim": {
        "torch.optim.Adam": Adam,
        "pyro.optim.clipped_adam.ClippedAdam": ClippedAdam,
        "torch.optim.RMSprop": RMSprop,
    },
}
