"""Every config option composes, and bad values stop the run with a one-line error naming the key."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

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
    if group == "elbo" and option == "enum_counts":  # sums out discrete latents: a model that has some
        overrides += ["model=air", "data=multimnist", "model.baseline=none"]
    if group == "data" and option == "arrays":  # its one required key
        overrides.append("data.path=arrays.npz")
    cfg = make_cfg(overrides)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^trainer.accelerator: 'gpu' needs a GPU, but none is visible"):
            validate_config(cfg)  # refused before any work on a machine without one
        return
    if (group, option) == ("logger", "wandb") and importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match="^logger.wandb: wandb is not installed; pip install wandb"):
            validate_config(cfg)  # an optional dependency (pip install -e ".[wandb]")
        return
    validate_config(cfg)  # raises ConfigError on a bad value
    # The option was the one composed: its own _target_ (for a group that declares one) is in the config.
    chosen = OmegaConf.load(Path(CONFIG_DIR) / group / f"{option}.yaml")
    if group in cfg and isinstance(chosen, DictConfig) and "_target_" in chosen:
        assert cfg[group]._target_ == chosen._target_, (group, option)


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

    from airlab.training.build import build_optimizer

    weights = [torch.nn.Parameter(torch.zeros(2))]
    for option in options("optim"):
        cfg = make_cfg([f"optim={option}"])
        optimizer = build_optimizer(cfg.optim)([{"params": weights, "name": "main"}])
        assert type(optimizer).__name__ == cfg.optim._target_.rsplit(".", 1)[1], option
        # Every option the YAML sets reaches the optimizer; baseline_lr (the module's) does not.
        group = optimizer.param_groups[0]
        for key, value in cfg.optim.items():
            if key in ("_target_", "_partial_", "baseline_lr"):
                continue
            listed = isinstance(value, ListConfig)
            actual, expected = (tuple(group[key]), tuple(value)) if listed else (group[key], value)
            assert actual == expected, (option, key)
        assert "baseline_lr" not in group and group["name"] == "main"


def test_trainer_and_logger_options_instantiate(make_cfg, tmp_path):
    for option in ("default", "cpu"):
        cfg = make_cfg([f"trainer={option}"])
        trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        # The YAML's values, not Lightning's defaults (1,000 epochs, 1 sanity step, a summary).
        assert (trainer.max_epochs, trainer.num_sanity_val_steps, trainer.log_every_n_steps) == (100, 0, 10)
        assert trainer.default_root_dir == cfg.paths.output_dir and trainer.num_devices == 1
    assert type(trainer.accelerator).__name__ == "CPUAccelerator"  # trainer=cpu, the last one


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
    from airlab.training.build import build_module

    cfg = make_cfg(["model=air", "data=mnist"])
    with pytest.raises(
        ConfigError,
        match=r"^data: model=air reads batch key 'count', which MNISTDataModule does not provide "
        r"\(its batches have: image, label\)",
    ):
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


#: What the two AIR presets share: AIR on MultiMNIST, TraceGraph with NVIL baselines, Adam at 1e-4 with the
#: baselines at 0.1, step-based validation on 16 batches.
AIR_PRESET_VALUES = {
    "model._target_": "airlab.models.air.AIR",
    "model.baseline": "nvil",
    "data._target_": "airlab.data.multimnist.MultiMNISTDataModule",
    "data.batch_size": 64,
    "elbo._target_": "airlab.estimators.TraceGraphEstimator",
    "optim._target_": "torch.optim.Adam",
    "optim.lr": 1.0e-4,
    "optim.baseline_lr": 0.1,
    "trainer.max_epochs": -1,
    "trainer.check_val_every_n_epoch": None,
    "trainer.limit_val_batches": 16,
    "callbacks.model_checkpoint.every_n_epochs": 1,
    "callbacks.reconstructions.every_n_epochs": 1,
    "callbacks.grad_variance.every_n_steps": 2000,
    "optimized_metric": "val/count_accuracy",
}

#: What each preset composes to in the keys that matter: the values before the presets stopped restating
#: defaults (model/air.yaml, data/multimnist.yaml, optim/adam.yaml, trainer/default.yaml, ...).
PRESET_VALUES = {
    "air_multimnist": {
        **AIR_PRESET_VALUES,
        "model.z_pres_prior": 1.0e-8,
        "model.scale_prior_sd": 0.1,
        "trainer.max_steps": 50000,
        "trainer.val_check_interval": 500,
        "task_name": "air_multimnist",
    },
    # Pyro's AIR tutorial: examples/air/main.py with the tutorial's flags.
    "air_pyro_tutorial": {
        **AIR_PRESET_VALUES,
        "model.max_steps": 3,
        "model.z_pres_prior": 0.01,
        "model.z_pres_prior_type": "bernoulli",
        "model.z_pres_anneal": "none",
        "model.scale_prior_mean": 3.0,
        "model.scale_prior_sd": 0.2,
        "model.predict_hidden": [200],
        "model.baseline_hidden": [200],
        "model.decoder_sigmoid": True,
        "model.decoder_output_bias": -2.0,
        "model.scale_to_dataset": True,
        "trainer.max_steps": 200000,
        "trainer.val_check_interval": 1000,
        "task_name": "air_pyro_tutorial",
    },
    # Pyro's VAE example.
    "vae_mnist": {
        "model._target_": "airlab.models.vae.VAE",
        "model.z_dim": 50,
        "model.hidden_dim": 400,
        "model.scale_to_dataset": False,
        "data._target_": "airlab.data.mnist.MNISTDataModule",
        "data.batch_size": 256,
        "elbo._target_": "airlab.estimators.TraceEstimator",
        "optim._target_": "torch.optim.Adam",
        "optim.lr": 1.0e-3,
        "trainer.max_epochs": 100,
        "task_name": "vae_mnist",
        "tags": ["vae", "mnist"],
    },
}


@pytest.mark.parametrize("experiment", sorted(PRESET_VALUES))
def test_presets_compose_to_their_values(make_cfg, experiment):
    cfg = make_cfg([f"experiment={experiment}"])
    validate_config(cfg)
    composed = {}
    for key in PRESET_VALUES[experiment]:
        value = OmegaConf.select(cfg, key)
        composed[key] = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
    assert composed == PRESET_VALUES[experiment]


def leaves(node: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        flat.update(leaves(value, path) if isinstance(value, dict) and value else {path: value})
    return flat


@pytest.mark.parametrize("experiment", options("experiment"))
def test_presets_set_only_what_differs_from_the_defaults_they_compose(make_cfg, experiment):
    """A preset restates no default: every group it picks and every value it sets changes the config."""
    preset = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml"))
    first_line = (Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml").read_text().splitlines()[1]
    assert first_line.startswith("# ") and len(first_line) > 40, "say what the preset is for"
    train_defaults = {}
    for entry in OmegaConf.load(Path(CONFIG_DIR) / "train.yaml").defaults:
        if not isinstance(entry, str):
            train_defaults.update(entry)
    groups = []
    for entry in preset.pop("defaults", []):
        if isinstance(entry, str):  # the preset it builds on (air_multimnist_long: air_multimnist)
            groups.append(f"experiment={entry}")
            continue
        ((key, option),) = entry.items()
        group = key.removeprefix("override /")
        assert train_defaults[group] != option, f"{experiment}: {group}={option} is already the default"
        groups.append(f"{group}={option}")
    without = make_cfg(groups, run="without")
    for key, value in leaves(preset).items():
        before = OmegaConf.select(without, key, default="<absent>")
        before = OmegaConf.to_container(before) if isinstance(before, ListConfig) else before
        assert before != value, f"{experiment}: {key}={value} restates the default"
