"""A file from anywhere never runs code, and a resume that cannot work is one line before any work.

The malicious checkpoint is the one a reviewer builds: an object whose ``__reduce__`` runs a shell
command that creates a marker file. Train, evaluate and the variance report must each refuse it with one
line and exit code 2, and the marker must never appear.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import airlab.cli
from airlab.errors import CheckpointError, ConfigError, report_user_errors
from airlab.resume.checkpoint import check_schedule, convert_checkpoint, load_checkpoint
from airlab.training.run import run_training
from tests.conftest import FAST, run_script


class RunsACommand:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "airlab_config": {"x": RunsACommand(str(marker))}}, path)
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize("config", ["train", "evaluate", "variance_report"])
def test_a_checkpoint_that_runs_code_is_refused_in_one_line_and_nothing_runs(make_cfg, capsys, evil, config):
    path, marker = evil
    cfg = make_cfg([f"ckpt_path={path}", *FAST], name=config)
    task = getattr(airlab.cli, f"{config}_app").__wrapped__
    with pytest.raises(SystemExit) as stop:
        report_user_errors(task, cfg)
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"airlab error: ckpt_path: {path} holds objects that")
    assert "(posix.system)" in lines[0] and "nothing in it ran" in lines[0]
    assert not marker.exists()


@pytest.mark.slow  # a subprocess: the same behaviour is tested in-process in the fast suite
def test_the_train_script_refuses_it_too(evil, tmp_path):
    path, marker = evil
    result = run_script("train.py", f"ckpt_path={path}", *FAST, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert [ln for ln in result.stderr.splitlines() if ln.strip()][0].startswith("airlab error: ckpt_path:")
    assert not marker.exists()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A VAE trained 6 steps (2 epochs), as train writes it."""
    from tests.conftest import compose_config

    run = tmp_path_factory.mktemp("trained")
    cfg = compose_config("train", [*FAST, "seed=0"], run)
    run_training(cfg)
    return run / "checkpoints" / "last.ckpt"


def test_airlabs_own_checkpoints_load_with_weights_only(trained_checkpoint):
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    assert checkpoint["global_step"] == 6 and checkpoint["airlab_num_train"] == 96
    assert isinstance(checkpoint["airlab_config"], dict)
    assert load_checkpoint(trained_checkpoint)["global_step"] == 6


def test_an_older_checkpoint_with_numpy_is_refused_then_converted_on_request(trained_checkpoint, tmp_path):
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    # What a random state saved by numpy looks like: an ndarray and numpy scalars.
    checkpoint["airlab_rng"]["numpy"]["keys"] = np.arange(624, dtype=np.uint32)
    checkpoint["extra"] = np.float64(2.5)
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.raises(CheckpointError, match=r"python -m airlab.resume.checkpoint convert FILE NEW_FILE$"):
        load_checkpoint(old)
    converted = convert_checkpoint(old, tmp_path / "new.ckpt")
    loaded = load_checkpoint(converted)
    assert torch.equal(
        loaded["airlab_rng"]["numpy"]["keys"], torch.arange(624, dtype=torch.int64).to(torch.uint32)
    )
    assert loaded["extra"] == 2.5 and loaded["global_step"] == 6


def test_conversion_still_refuses_code(evil, tmp_path):
    path, marker = evil
    with pytest.raises(CheckpointError, match="not converted"):
        convert_checkpoint(path, tmp_path / "out.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_steps=3"], r"^trainer.max_steps: 3 is not above the 6 steps .* has trained"),
        (["trainer.max_steps=6"], r"^trainer.max_steps: 6 is not above the 6 steps"),
        (
            ["trainer.max_steps=-1", "trainer.max_epochs=2"],
            r"^trainer.max_epochs: 2 is not above the 2 epochs",
        ),
        (
            ["trainer.max_steps=20", "trainer.max_epochs=9", "optim=rmsprop"],
            r"^optim: .* holds the state of torch.optim.Adam, not of ",
        ),
    ],
)
def test_a_resume_that_cannot_work_is_refused_before_any_work(
    make_cfg, trained_checkpoint, overrides, message
):
    cfg = make_cfg([*FAST, f"ckpt_path={trained_checkpoint}", *overrides])
    with pytest.raises(ConfigError, match=message) as info:
        run_training(cfg)
    assert "\n" not in str(info.value)


def test_a_resume_on_other_data_sizes_warns_and_goes_on(make_cfg, trained_checkpoint, caplog):
    cfg = make_cfg([*FAST, f"ckpt_path={trained_checkpoint}", "trainer.max_steps=8", "trainer.max_epochs=4",
                    "data.subset_size=128"])  # fmt: skip
    metrics = run_training(cfg)
    assert metrics["global_step"] == 8
    assert "was trained on 96 training items, this data has 128; resuming anyway" in caplog.text


COSINE = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "eta_min": 0.0}
MULTISTEP = {"_target_": "torch.optim.lr_scheduler.MultiStepLR", "_partial_": True, "gamma": 0.3}


@pytest.mark.parametrize(
    ("trained", "overrides", "line"),
    [
        # torch restores T_max with the schedule's state: a longer run would warm-restart the rate
        (
            {**COSINE, "T_max": 10},
            ["scheduler=cosine", "trainer.max_steps=20"],
            "scheduler.T_max: 20 (from trainer.max_steps) differs from the 10 last.ckpt was trained with, "
            "and a resumed schedule keeps its own; set scheduler.T_max=10 to resume",
        ),
        (
            {**MULTISTEP, "milestones": [4, 8]},
            ["scheduler=multistep", "scheduler.milestones=[5,8]", "scheduler.gamma=0.3"],
            "scheduler.milestones: [5,8] differs from the [4,8] last.ckpt was trained with",
        ),
        (
            {},
            ["scheduler=multistep", "scheduler.milestones=[5,8]"],
            "scheduler: last.ckpt was trained with the learning-rate schedule none, the config has "
            "torch.optim.lr_scheduler.MultiStepLR",
        ),
    ],
)
def test_a_resume_with_other_schedule_settings_is_refused(make_cfg, trained, overrides, line):
    cfg = make_cfg(overrides)
    with pytest.raises(ConfigError) as error:
        check_schedule(trained, cfg, "last.ckpt")
    assert str(error.value).startswith(line), str(error.value)


def test_the_same_schedule_resumes(make_cfg):
    check_schedule(
        {**COSINE, "T_max": 20}, make_cfg(["scheduler=cosine", "trainer.max_steps=20"]), "last.ckpt"
    )
    check_schedule({}, make_cfg([]), "last.ckpt")
