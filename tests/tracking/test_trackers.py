"""Trackers (MLflow read back through its own client, wandb offline), the config tree, per-machine
settings and early stopping."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from airlab.config import validate_config
from airlab.config.tree import TREE_FILE
from airlab.errors import EXIT_USER_ERROR, ConfigError, report_user_errors
from airlab.training.run import train
from tests.conftest import CONFIG_DIR, FAST, REPO_ROOT, read_events


def mlflow_client(run_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{run_dir}/outputs/mlflow.db")


def only_run(client, experiment: str = "debug"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


def artifact_paths(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for info in client.list_artifacts(run_id, path):
        found.extend(artifact_paths(client, run_id, info.path) if info.is_dir else [info.path])
    return found


def test_mlflow_holds_the_metrics_params_and_pictures_of_the_run(make_cfg):
    cfg = make_cfg([*FAST, "logger=mlflow", "callbacks.reconstructions.every_n_epochs=1"])
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    client = mlflow_client(run_dir)
    run = only_run(client)
    assert run.data.tags["run_dir"] == str(run_dir)

    logged = run.data.metrics
    assert {"train/loss", "train/elbo", "val/elbo", "test/elbo", "throughput/steps_per_s"} <= set(logged)
    assert logged["val/elbo"] == pytest.approx(metrics["val/elbo"], abs=1e-4)
    assert logged["test/elbo"] == pytest.approx(metrics["test/elbo"], abs=1e-4)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(6))  # every step, as TensorBoard has them

    params = run.data.params  # the flattened config, as TensorBoard's hparams
    assert params["model.z_dim"] == str(cfg.model.z_dim) and params["elbo._target_"] == cfg.elbo._target_
    assert params["trainer.max_steps"] == "6"

    pictures = artifact_paths(client, run.info.run_id)
    assert "val/reconstructions/step_0000006.png" in pictures and "val/samples/step_0000006.png" in pictures
    assert "val/latent_tsne/step_0000006.png" in pictures  # a matplotlib figure
    local = Path(client.download_artifacts(run.info.run_id, "val/reconstructions/step_0000006.png"))
    from PIL import Image

    width, height = Image.open(local).size
    assert width > 2 * 16 * 28 and height > 2 * 2 * 28  # as TensorBoard's val/reconstructions

    # The composed config, saved as a tree at start-up.
    tree = (run_dir / TREE_FILE).read_text()
    assert "z_dim: " in tree and "mlflow" in tree and "\x1b[" not in tree


def test_many_loggers_write_tensorboard_csv_and_mlflow(make_cfg):
    cfg = make_cfg([*FAST, "logger=many", "test=false"])
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert "val/elbo" in read_events(run_dir / "tensorboard").Tags()["scalars"]
    assert "val/elbo" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    run = only_run(mlflow_client(run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["val/elbo"] == pytest.approx(metrics["val/elbo"], abs=1e-4)
    assert run.data.params["model.z_dim"] == str(cfg.model.z_dim)


def test_wandb_without_the_package_stops_with_one_line(make_cfg, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    cfg = make_cfg(["logger=wandb"])
    with pytest.raises(SystemExit) as stop:
        report_user_errors(validate_config, cfg)
    assert stop.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err.splitlines() == [
        "airlab error: logger.wandb: wandb is not installed; pip install wandb (or use logger=mlflow)"
    ]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is an optional dependency")
def test_wandb_offline_run_writes_under_the_run_dir(make_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg([*FAST, "logger=wandb", "test=false", "callbacks.reconstructions.every_n_epochs=1"])
    train(cfg)
    (run,) = (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*")
    pictures = {p.name.split("_")[0] for p in (run / "files" / "media" / "images" / "val").glob("*.png")}
    assert {"reconstructions", "samples", "latent"} <= pictures  # as TensorBoard has them


def test_early_stopping_is_off_by_default_and_stops_on_the_optimised_metric(make_cfg):
    cfg = make_cfg(["callbacks.early_stopping.enabled=true"])
    assert cfg.callbacks.early_stopping.monitor == cfg.optimized_metric == "val/elbo"
    assert make_cfg([]).callbacks.early_stopping.enabled is False
    # patience 1 and an improvement nobody makes: the second validation stops the fit
    overrides = ["trainer.max_steps=-1", "trainer.max_epochs=8", "test=false"]
    stop = ["callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1e9"]
    cfg = make_cfg([*FAST, *overrides, "callbacks.early_stopping.enabled=true", *stop], run="stopping")
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["epoch"] == 2  # stopped after the second epoch's validation, not 8


def test_local_config_is_git_ignored_and_composed_when_present(tmp_path):
    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert "configs/local/default.yaml" in ignored
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "local" / "default.yaml").unlink(missing_ok=True)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        assert compose(config_name="train").trainer.max_epochs == 100  # no local settings: fine
    (configs / "local" / "default.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: 7\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        assert compose(config_name="train").trainer.max_epochs == 7
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("option", ["overfit", "limit", "profiler"])
def test_debug_options_compose_and_validate(make_cfg, option):
    cfg = make_cfg([f"debug={option}"])
    validate_config(cfg)
    if option == "overfit":
        assert cfg.trainer.overfit_batches == 3
    if option == "limit":
        assert cfg.trainer.limit_train_batches == 5
    if option == "profiler":
        assert cfg.trainer.profiler.dirpath == cfg.paths.output_dir


def test_profiler_writes_its_report_in_the_run_dir(make_cfg):
    small = [
        "data.source=bundled",
        "data.subset_size=96",
        "data.batch_size=32",
        "data.eval_batch_size=32",
        "trainer.accelerator=cpu",
        "trainer.max_steps=3",
        "trainer.limit_val_batches=1",
        "test=false",
        "callbacks.progress_bar=null",
    ]
    cfg = make_cfg(["debug=profiler", *small])
    train(cfg)
    reports = [Path(cfg.paths.output_dir) / "fit-profile.txt"]
    assert "run_training_batch" in reports[0].read_text()


def test_a_bad_nested_target_is_one_line(make_cfg):
    cfg = make_cfg(["debug=profiler", "+trainer.profiler.bogus=1"])
    with pytest.raises(ConfigError, match=r"trainer\.profiler\.bogus: unknown key"):
        validate_config(cfg)
