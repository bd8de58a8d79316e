"""A run folder as a Python object: config, metrics, history, checkpoints, model, predictive, pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import airlab
from airlab.analysis.runs import Run, load_run
from airlab.errors import CheckpointError, ConfigError
from airlab.resume.checkpoint import load_checkpoint, model_state
from airlab.training.run import train
from tests.conftest import FAST, compose_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One tiny VAE run (6 steps), trained in-process once for the module, with the ``.hydra/config.yaml``
    that Hydra writes when a script runs (``make_cfg``'s config, composed the same way)."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", [*FAST, "trainer.max_steps=6", "seed=0"], out)
    (out / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # before the run and unresolved, as Hydra saves it
    train(cfg)
    GlobalHydra.instance().clear()
    return out


@pytest.fixture(scope="module")
def run(run_dir) -> Run:
    return airlab.load_run(run_dir)


def test_config_is_the_composed_config_resolved_and_metrics_are_metrics_json(run, run_dir):
    assert "output_dir: ${hydra:runtime.output_dir}" in (run_dir / ".hydra" / "config.yaml").read_text()
    config = run.config
    assert config["paths"]["output_dir"] == str(run_dir)  # ${hydra:...} answered without Hydra
    assert config["callbacks"]["model_checkpoint"]["dirpath"] == f"{run_dir}/checkpoints"
    assert config["model"]["_target_"] == "airlab.models.vae.VAE" and config["trainer"]["max_steps"] == 6
    assert run.metrics == json.loads((run_dir / "metrics.json").read_text())
    assert run.metrics["global_step"] == 6


def test_history_has_every_scalar_once_by_tag_and_step(run):
    history = run.history
    assert list(history.columns) == ["step", "tag", "value", "wall_time"]
    loss = history[history.tag == "train/loss"]
    assert list(loss.step) == list(range(6)) and loss.value.notna().all() and loss.wall_time.notna().all()
    assert not history.duplicated(["tag", "step"]).any()
    assert list(history.tag) == sorted(history.tag)
    last_elbo = history[history.tag == "val/elbo"].value.iloc[-1]
    assert last_elbo == pytest.approx(run.metrics["val/elbo"], abs=1e-4)


def test_history_keeps_the_last_written_value_of_a_step_logged_twice(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    (tmp_path / "metrics.json").write_text("{}")
    for start, stop, value in ((0, 5, 1.0), (3, 6, 2.0)):  # a run killed after step 4, resumed at 3
        writer = SummaryWriter(str(tmp_path / "tensorboard"))
        for step in range(start, stop):
            writer.add_scalar("train/loss", value, step)
        writer.close()
    history = load_run(tmp_path).history
    assert list(zip(history.step, history.value, strict=True)) == [
        (0, 1),
        (1, 1),
        (2, 1),
        (3, 2),
        (4, 2),
        (5, 2),
    ]


def test_history_comes_from_the_csv_logger_without_event_files(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/elbo\n0,0,5.0,\n0,1,4.0,\n0,1,,-3.0\n0,1,3.5,\n"
    )
    history = load_run(tmp_path).history
    loss = history[history.tag == "train/loss"]
    assert list(zip(loss.step, loss.value, strict=True)) == [(0, 5.0), (1, 3.5)]
    assert set(history.tag) == {"epoch", "train/loss", "val/elbo"} and history.wall_time.isna().all()


def test_checkpoints_last_and_best(run, run_dir):
    assert run.checkpoint() == run_dir / "checkpoints" / "last.ckpt"
    best = run.checkpoint("best")
    recorded = [
        s["best_model_path"]
        for s in load_checkpoint(run.checkpoint())["callbacks"].values()
        if "best_model_path" in s
    ]
    assert best.parent == run_dir / "checkpoints" and [str(best)] == recorded
    with pytest.raises(ConfigError, match="'first': pass 'last' or 'best'"):
        run.checkpoint("first")


def test_a_missing_checkpoint_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(CheckpointError) as err:
        load_run(tmp_path).checkpoint("last")
    assert str(tmp_path / "checkpoints" / "last.ckpt") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        load_run(tmp_path).checkpoint("best")


def test_model_is_rebuilt_in_eval_mode_with_the_checkpoint_s_weights(run):
    model = run.model()
    assert not model.training and not any(m.training for m in model.modules())
    saved = model_state(load_checkpoint(run.checkpoint()))
    state = model.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    assert run.model() is model  # built once per checkpoint file


def test_predictive_draws_from_the_posterior_and_the_prior(run):
    datamodule = run.datamodule()
    datamodule.setup("fit")
    (images,) = run.model().batch_inputs(next(iter(datamodule.train_dataloader())))
    batch = images.shape[0]
    posterior = run.predictive(5)(images)
    assert posterior["z"].shape == (5, batch, 50) and posterior["x"].shape == (5, batch, 784)
    assert not torch.equal(posterior["x"][0], images.reshape(batch, -1))  # new draws of the data
    prior = run.predictive(3, posterior=False)(images)
    assert prior["z"].shape == (3, batch, 50)
    kept = run.predictive(2, resample_observed=False)(images)
    assert torch.equal(kept["x"][1], images.reshape(batch, -1))


def test_pictures_are_the_run_s_pngs_without_the_loggers_files(run, run_dir):
    assert run.pictures == [run_dir / "latent_tsne.png"]
    assert list((run_dir / "tensorboard").rglob("*.png"))  # the projector's sprite: not a picture


def test_a_missing_run_folder_is_one_line_naming_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        airlab.load_run(tmp_path / "nowhere")
    assert str(err.value) == f"load_run: {tmp_path / 'nowhere'}: no such run folder"
    with pytest.raises(ConfigError, match="not a run folder"):
        load_run(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=r"metrics.json: not found"):
        _ = load_run(tmp_path).metrics
    with pytest.raises(ConfigError, match=r"config.yaml: not found"):
        _ = load_run(tmp_path).config


def test_config_answers_hydra_from_hydra_yaml_and_keeps_what_does_not_resolve(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        "paths:\n  output_dir: ${hydra:runtime.output_dir}\n  plots: ${paths.output_dir}/plots\n"
        "job: ${hydra:job.num}\nname: job_${hydra:job.num}\nhome: ${oc.env:AIRLAB_TEST_UNSET_VARIABLE}\n"
    )
    (tmp_path / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    num: 3\n")
    assert load_run(tmp_path).config == {
        "paths": {"output_dir": str(tmp_path), "plots": f"{tmp_path}/plots"},
        "job": 3,
        "name": "job_3",
        "home": "${oc.env:AIRLAB_TEST_UNSET_VARIABLE}",
    }
