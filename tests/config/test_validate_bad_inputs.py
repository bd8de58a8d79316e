"""The bad-input table: 53 bad inputs, each of which must end in one line on stderr before any work.

Every config group has rows (model, data, elbo, optim, scheduler, trainer, callbacks, logger, paths, debug,
experiment, hparams_search), as do the top-level keys (seed, ckpt_path, test, tags, an unknown one),
evaluate.yaml's ``eval.*``, variance_report.yaml's ``report.*``, the incompatible combinations (an
estimator the model cannot use, ``vectorize_particles`` for AIR, more devices than there are, NVIL
under ``elbo=iwae|renyi``) and Hydra's own errors (an unknown group option, a malformed override, an
unknown key without ``+``).

Each row runs in this process, as the script does: :func:`airlab.errors.run_hydra_app` around composing
the config and calling the script's task (the body of its ``@hydra.main`` function). It checks exit code
2, a single ``airlab error: <key>: ...`` line naming the key (and the value, where there is one), no
traceback, and that nothing was written to the run directory (no data, no checkpoint, no log). Two more
rows run the real ``scripts/train.py`` in a subprocess (Hydra fails before torch is imported, so they
are fast).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import DictConfig

import airlab.cli
from airlab.errors import EXIT_USER_ERROR, ConfigError, report_user_errors, run_hydra_app
from tests.conftest import REPO_ROOT

AIR = ["model=air", "data=multimnist"]
MANY_DEVICES = (torch.cuda.device_count() or 64) * 64  # more than any machine here has

#: (config, overrides, key, value as the message quotes it or None, a fragment of what is valid)
ROWS = [
    # model
    ("train", ["model.hidden_dim=wide"], "model.hidden_dim", "'wide'", "expected int"),
    ("train", ["+model.zdim=3"], "model.zdim", None, "valid keys: z_dim, hidden_dim"),
    ("train", [*AIR, "model.max_steps=0"], "model.max_steps", "0", "must be >= 1"),
    ("train", [*AIR, "model.z_pres_prior_type=poisson"], "model.z_pres_prior_type", "'poisson'", "bernoulli"),
    ("train", ["model=foo"], "model", "'foo'", "choose one of: air, gaussian_toy, vae"),
    # data
    ("train", ["data.batch_size=0"], "data.batch_size", "0", "must be >= 1"),
    ("train", ["data.source=floppy"], "data.source", "'floppy'", "bundled"),
    ("train", ["+data.shuffle=true"], "data.shuffle", None, "valid keys: source"),
    (
        "train",
        ["data=imagenet"],
        "data",
        "'imagenet'",
        "choose one of: arrays, gaussian_toy, mnist, multimnist",
    ),
    # elbo, and the estimator against the model
    ("train", ["elbo.num_particles=0"], "elbo.num_particles", "0", "must be >= 1"),
    ("train", ["elbo=tracegraph", "elbo.dependencies=guess"], "elbo.dependencies", "'guess'", "declared"),
    ("train", [*AIR, "elbo=meanfield"], "elbo", "elbo=meanfield", "use elbo=trace or elbo=tracegraph"),
    ("train", [*AIR, "elbo.vectorize_particles=true"], "elbo.vectorize_particles", "true", "=false"),
    ("train", [*AIR, "elbo=jit_tracegraph", "model.baseline=decaying_avg"], "model.baseline",
     "'decaying_avg'", "elbo=tracegraph"),
    ("train", [*AIR, "elbo=iwae", "model.baseline=nvil"], "model.baseline", "'nvil'",
     "NVIL baseline network would be trained but unused"),
    ("train", [*AIR, "elbo=renyi"], "model.baseline", "'nvil'", "model.baseline=none"),
    # optim
    ("train", ["optim.lr=-1"], "optim.lr", "-1", "must be > 0"),
    ("train", ["optim=clipped_adam", "optim.clip_norm=0"], "optim.clip_norm", "0", "must be > 0"),
    ("train", ["optim=sgd"], "optim", "'sgd'", "adam"),
    # scheduler
    ("train", ["scheduler=multistep"], "scheduler.milestones", None, "must be set"),
    ("train", ["scheduler=multistep", "scheduler.milestones=[0,5]"], "scheduler.milestones", "0", ">= 1"),
    ("train", ["scheduler=cosine", "scheduler.T_max=0"], "scheduler.T_max", "0", "must be >= 1"),
    ("train", ["scheduler=cosine"], "scheduler.T_max", "-1", "set trainer.max_steps, or"),
    ("train", ["scheduler=linear"], "scheduler", "'linear'", "cosine, multistep"),
    # trainer
    ("train", ["trainer.max_epochs=-5"], "trainer.max_epochs", "-5", "must be >= -1"),
    ("train", ["+trainer.epochs=3"], "trainer.epochs", None, "valid keys: accelerator"),
    ("train", [f"trainer.devices={MANY_DEVICES}"], "trainer.devices", str(MANY_DEVICES), "available"),
    ("train", ["trainer.accelerator=quantum"], "trainer.accelerator", "'quantum'", "auto, cpu"),
    ("train", ["trainer.gradient_clip_algorithm=clip"], "trainer.gradient_clip_algorithm", "'clip'", "norm"),
    # callbacks
    ("train", ["callbacks.model_checkpoint.save_top_k=many"], "callbacks.model_checkpoint.save_top_k",
     "'many'", "expected int"),
    ("train", ["+callbacks.early_stop.patience=3"], "callbacks.early_stop", None, "model_checkpoint"),
    ("train", ["callbacks.model_checkpoint.every_n_train_steps=500"],
     "callbacks.model_checkpoint.every_n_train_steps", "500",
     "add callbacks.model_checkpoint.every_n_epochs=null"),
    ("train", ["callbacks.lr_monitor.logging_interval=hour"], "callbacks.lr_monitor.logging_interval",
     "'hour'", "step, epoch"),
    # logger
    ("train", ["logger=csv", "+logger.csv.flush_logs_every_n_steps=often"],
     "logger.csv.flush_logs_every_n_steps", "'often'", "expected int"),
    ("train", ["logger.tensorboard.default_hp_metric=maybe"], "logger.tensorboard.default_hp_metric",
     "'maybe'", "expected bool"),
    # paths
    ("train", ["+paths.cache_dir=/tmp"], "paths.cache_dir", None, "valid keys: root_dir"),
    ("train", ["paths.data_dir=null"], "paths.data_dir", "null", "expected str"),
    # top-level keys
    ("train", ["seed=-1"], "seed", "-1", "must be in [0, 4294967295]"),
    ("train", ["+epochs=3"], "epochs", None, "valid keys: seed"),
    ("train", ["test=maybe"], "test", "'maybe'", "expected bool"),
    ("train", ["tags=dev"], "tags", "'dev'", "a list of str"),
    ("train", ["ckpt_path=/no/such/last.ckpt"], "ckpt_path", "/no/such/last.ckpt", "file not found"),
    # debug, experiment, hparams_search (Hydra's own: an unknown option of the group)
    ("train", ["debug=slow"], "debug", "'slow'", "choose one of: fast"),
    ("train", ["experiment=air"], "experiment", "'air'", "air_multimnist"),
    ("train", ["hparams_search=grid"], "hparams_search", "'grid'", "vae_optuna"),
    # Hydra: a malformed override, an unknown key without +
    ("train", ["model.z_dim==3"], "model.z_dim==3", None, "malformed override"),
    ("train", ["+"], "+", None, "malformed override"),
    ("train", ["model.zdim=3"], "model.zdim", None, "unknown key; valid keys: z_dim, hidden_dim"),
    # evaluate.yaml: eval.*
    ("evaluate", ["eval.split=train"], "eval.split", "'train'", "test, val"),
    ("evaluate", ["eval.iwae_k=0"], "eval.iwae_k", "0", "must be >= 1"),
    ("evaluate", ["+eval.samples=5"], "eval.samples", None, "valid keys: split"),
    # variance_report.yaml: report.*
    ("variance_report", ["report.num_samples=1"], "report.num_samples", "1", "must be >= 2"),
    ("variance_report", ["report.device=tpu"], "report.device", "'tpu'", "auto, cpu, cuda"),
]  # fmt: skip
SCRIPTS = {"train": "train.py", "evaluate": "evaluate.py", "variance_report": "variance_report.py"}


@cache
def script_task(config: str) -> Callable[[DictConfig], object]:
    """What ``scripts/<config>.py`` (and ``airlab-<config>``) runs once Hydra has composed the config:
    its app in ``airlab.cli`` without the ``@hydra.main`` wrapper (which reads ``sys.argv``)."""
    assert f"from airlab.cli import {config}" in (REPO_ROOT / "scripts" / SCRIPTS[config]).read_text()
    return getattr(airlab.cli, f"{config}_app").__wrapped__


def test_the_table_covers_every_group_and_is_large_enough():
    assert len(ROWS) == 53  # the count in the module docstring
    keys = {key.split(".")[0] for _, _, key, _, _ in ROWS}
    groups = {"model", "data", "elbo", "optim", "scheduler", "trainer", "callbacks", "logger", "paths"}
    assert groups | {"debug", "experiment", "hparams_search", "seed", "ckpt_path", "eval", "report"} <= keys


@pytest.mark.parametrize(
    ("config", "overrides", "key", "value", "valid"), ROWS, ids=[" ".join(row[1]) for row in ROWS]
)
def test_bad_input_ends_in_one_line_before_any_work(
    make_cfg, tmp_path, capsys, config, overrides, key, value, valid
):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_hydra_app(lambda: script_task(config)(make_cfg(overrides, name=config)))
    stderr = capsys.readouterr().err
    assert exit_info.value.code == EXIT_USER_ERROR == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"airlab error: {key}: "), lines[0]
    assert value is None or value in lines[0], lines[0]
    assert valid in lines[0], lines[0]
    # Stopped before any work: nothing in the run directory (data, checkpoints, logs, metrics).
    run_dir = tmp_path / "run"
    assert not run_dir.exists() or not any(run_dir.iterdir()), list(run_dir.iterdir())


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "model=foo",
            "airlab error: model: 'foo' is not an option of the model group; "
            "choose one of: air, gaussian_toy, vae",
        ),
        ("model.z_dim==3", "airlab error: model.z_dim==3: malformed override (extraneous input '='"),
    ],
)
def test_the_real_script_prints_one_line_and_exits_2(tmp_path, override, line):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), override, f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 2, result.stderr
    lines = [entry for entry in result.stderr.splitlines() if entry.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr
    assert list(Path(tmp_path).iterdir()) == []  # no run directory, no data


def test_hydra_full_error_keeps_the_tracebacks(make_cfg, monkeypatch):
    """HYDRA_FULL_ERROR=1: Hydra's and airlab's errors propagate (with their tracebacks) as before."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(MissingConfigException):
        run_hydra_app(lambda: make_cfg(["model=foo"]))
    cfg = make_cfg(["data.batch_size=0"])
    with pytest.raises(ConfigError, match="^data.batch_size: 0 is out of range"):
        run_hydra_app(lambda: script_task("train")(cfg))


def test_hydra_reporting_is_given_back_once_the_task_starts(monkeypatch):
    """run_hydra_app sets HYDRA_FULL_ERROR only until the task starts: an unexpected error in the task
    is then reported by Hydra as usual (its traceback, exit code 1), and the variable is gone after."""
    import os

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    seen = {}

    def task() -> None:
        seen["start-up"] = os.environ.get("HYDRA_FULL_ERROR")
        report_user_errors(lambda: seen.setdefault("task", os.environ.get("HYDRA_FULL_ERROR")))

    run_hydra_app(task)
    assert seen == {"start-up": "1", "task": None}
    assert "HYDRA_FULL_ERROR" not in os.environ


def test_combinations_that_work_pass(make_cfg):
    """The combination checks refuse only what cannot work: NVIL under tracegraph is what it is for,
    and ``trace`` (documented as ignoring baselines) keeps the AIR default working."""
    from airlab.config import validate_config

    for overrides in (["elbo=tracegraph"], ["elbo=trace"], ["elbo=iwae", "model.baseline=none"]):
        validate_config(make_cfg([*AIR, *overrides]))
    validate_config(make_cfg(["elbo=iwae", "elbo.vectorize_particles=true", "trainer.devices=1"]))


@pytest.mark.parametrize(
    ("trainer", "gpus", "message"),
    [
        ({"accelerator": "gpu", "devices": [3]}, 2, "names GPU 3, but only 2 are visible"),
        ({"accelerator": "cuda", "devices": "0,1"}, 1, "asks for 2 devices, but only 1 GPU is available"),
        ({"accelerator": "auto", "devices": 4}, 2, "asks for 4 devices, but only 2 GPUs are available"),
        ({"accelerator": "gpu", "devices": 1}, 0, "'gpu' needs a GPU, but none is visible"),
        ({"accelerator": "cpu", "devices": 0}, 0, "0 is not valid; use a count >= 1"),
        ({"accelerator": "cpu", "devices": -1}, 0, "-1 is not valid on the CPU; use a number of processes"),
    ],
)
def test_devices_are_checked_against_the_hardware(monkeypatch, trainer, gpus, message):
    from airlab.config.combinations import check_devices

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(ConfigError, match=message):
        check_devices(trainer)
    check_devices({**trainer, "devices": "auto"} if gpus else {"accelerator": "cpu", "devices": 1})
