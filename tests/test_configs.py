"""Every config option composes, and bad values stop the run with a one-line error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from airlab.config import validate_config
from airlab.errors import ConfigError
from tests.conftest import CONFIG_DIR

GROUPS = [
    "model",
    "data",
    "elbo",
    "optim",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
    "hparams_search",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(group, option) for group in GROUPS for option in options(group)])
def test_every_option_composes_and_validates(make_cfg, group, option):
    overrides = [f"{group}={option}"]
    if group == "model" and option == "air":
        overrides.append("data=multimnist")
    cfg = make_cfg(overrides)
    validate_config(cfg)
    assert cfg.task_name


def test_groups_have_the_options_the_design_names():
    assert {"vae", "air"} <= set(options("model"))
    assert {"mnist", "multimnist"} <= set(options("data"))
    assert {"trace", "tracegraph", "meanfield", "renyi", "iwae", "jit_trace", "jit_tracegraph"} <= set(
        options("elbo")
    )
    assert {"adam", "clipped_adam", "rmsprop"} <= set(options("optim"))
    assert {"default", "cpu", "gpu", "ddp"} <= set(options("trainer"))
    assert {"tensorboard", "csv", "none"} <= set(options("logger"))
    assert {"default", "none"} <= set(options("callbacks"))
    assert {"vae_mnist", "air_multimnist", "air_pyro_tutorial"} <= set(options("experiment"))
    assert {"vae_optuna", "air_optuna"} <= set(options("hparams_search"))


def test_defaults_match_pyro_vae_example(make_cfg):
    cfg = make_cfg([])
    assert (cfg.model.z_dim, cfg.model.hidden_dim) == (50, 400)
    assert cfg.optim.lr == 1e-3 and cfg.data.batch_size == 256
    assert cfg.seed is None and cfg.elbo._target_.endswith("TraceEstimator")


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.batch_size=-1", "data.batch_size"),
        ("model.z_dim=0", "model.z_dim"),
        ("optim.lr=-0.1", "optim.lr"),
        ("data.source=floppy", "data.source"),
        ("data.binarize=sometimes", "data.binarize"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("elbo.num_particles=0", "elbo.num_particles"),
        ("seed=-3", "seed"),
        ("model.z_dim=abc", "model.z_dim"),
        ("++model.zdim=3", "model.zdim"),
    ],
)
def test_bad_values_name_the_key(make_cfg, override, key):
    cfg = make_cfg([override])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert message.startswith(key + ":"), message
    assert "\n" not in message


def test_zero_is_a_valid_seed(make_cfg):
    validate_config(make_cfg(["seed=0"]))


def test_optimizers_instantiate_with_param_groups(make_cfg):
    import torch

    from airlab.train import build_optimizer

    weights = [torch.nn.Parameter(torch.zeros(2))]
    for option in options("optim"):
        cfg = make_cfg([f"optim={option}"])
        optimizer = build_optimizer(cfg.optim)([{"params": weights, "name": "main"}])
        assert optimizer.param_groups[0]["lr"] == cfg.optim.lr


def test_trainer_and_logger_options_instantiate(make_cfg, tmp_path):
    for option in ("default", "cpu"):
        cfg = make_cfg([f"trainer={option}"])
        trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs


def test_air_tutorial_preset_has_the_published_settings(make_cfg):
    cfg = make_cfg(["experiment=air_pyro_tutorial"])
    validate_config(cfg)
    assert cfg.model._target_.endswith(".AIR") and cfg.data._target_.endswith("MultiMNISTDataModule")
    assert cfg.elbo._target_.endswith("TraceGraphEstimator") and cfg.model.baseline == "nvil"
    assert (cfg.optim.lr, cfg.optim.baseline_lr, cfg.data.batch_size) == (1e-4, 0.1, 64)
    assert (cfg.model.z_pres_prior, cfg.model.scale_prior_sd) == (0.01, 0.2)
    assert cfg.model.predict_hidden == [200] and cfg.model.baseline_hidden == [200]
    assert cfg.model.decoder_sigmoid and cfg.model.decoder_output_bias == -2.0
    assert cfg.trainer.max_steps == 200_000


def test_air_on_plain_mnist_is_refused_with_one_line(make_cfg):
    from airlab.data.mnist import MNISTDataModule
    from airlab.train import build_module

    cfg = make_cfg(["model=air", "data=mnist"])
    with pytest.raises(ConfigError, match=r"^data: model=air needs images annotated with count"):
        build_module(cfg, MNISTDataModule(source="bundled", subset_size=10))


def test_meanfield_with_air_is_refused(make_cfg):
    from airlab.estimators import MeanFieldEstimator
    from airlab.models.air import AIR

    with pytest.raises(ConfigError, match="elbo=meanfield needs a fully reparameterised guide"):
        MeanFieldEstimator().check_model(AIR(rnn_hidden=4, baseline="none"))


@pytest.mark.parametrize("option,metric", [("vae_optuna", "val/elbo"), ("air_optuna", "val/count_accuracy")])
def test_hparams_search_uses_the_optuna_sweeper(option, metric):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={option}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric == metric
    assert cfg.hydra.sweeper.params


@pytest.mark.parametrize("launcher,target", [("joblib", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
