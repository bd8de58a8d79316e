"""Checkpoint faults: a write that fails leaves the previous checkpoint intact; a checkpoint that is
missing, truncated or does not fit the model is one line naming the file, for training and evaluation."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from airlab.resume.checkpoint import load_checkpoint
from airlab.resume.interval_checkpoint import IntervalCheckpoint
from airlab.tasks.evaluate import evaluate
from airlab.training.run import train
from tests.conftest import FAST, compose_config
from tests.data.test_multimnist_cache import one_line_error

SHORT = [*FAST, "seed=0", "test=false", "callbacks.grad_variance.every_n_steps=0", "model.hidden_dim=32"]
QUICK_EVAL = ["eval.iwae_k=4", "eval.progress=false", "eval.tsne=false", "eval.pictures=false"]


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory) -> Path:
    """last.ckpt of a 2-step VAE run (model.z_dim=10)."""
    root = tmp_path_factory.mktemp("vae")
    train(compose_config("train", [*SHORT, "trainer.max_steps=2", "model.z_dim=10"], root))
    return root / "checkpoints" / "last.ckpt"


class FailingTrainer(SimpleNamespace):
    """What ``IntervalCheckpoint._save_checkpoint`` uses of a trainer; its save writes ``payload`` and
    then, when ``fail``, raises as a full disk would."""

    def save_checkpoint(self, filepath: str, weights_only: bool = False) -> None:
        Path(filepath).write_bytes(self.payload)
        if self.fail:
            raise OSError(28, "No space left on device")


def test_a_failed_checkpoint_write_leaves_the_previous_last_ckpt_intact(vae_ckpt, tmp_path):
    last = tmp_path / "last.ckpt"
    before = vae_ckpt.read_bytes()
    last.write_bytes(before)
    callback = IntervalCheckpoint(dirpath=tmp_path)
    trainer = FailingTrainer(global_step=7, is_global_zero=True, loggers=[], payload=before[:100], fail=True)
    with pytest.raises(OSError, match="No space left"):
        callback._save_checkpoint(trainer, str(last))
    assert last.read_bytes() == before and load_checkpoint(last)["global_step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left
    assert callback._last_global_step_saved == 0  # not counted as saved

    trainer.fail, trainer.payload = False, b"new"
    callback._save_checkpoint(trainer, str(last))
    assert last.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert callback._last_global_step_saved == 7 and callback._last_checkpoint_saved == str(last)


def truncated_copy(ckpt: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    data = ckpt.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def test_resuming_a_truncated_last_ckpt_is_one_line(vae_ckpt, make_cfg, tmp_path, capsys):
    """``ckpt_path=last`` finds a truncated last.ckpt (a run killed mid-write before writes were atomic)."""
    broken = truncated_copy(vae_ckpt, tmp_path / "out" / "debug" / "old" / "checkpoints" / "last.ckpt")
    cfg = make_cfg([*SHORT, f"paths.log_dir={tmp_path}/out", "ckpt_path=last"], run="out/debug/new")
    line = one_line_error(capsys, train, cfg)
    assert line.startswith(f"airlab error: ckpt_path: {broken} is not a readable checkpoint ("), line
    assert not (tmp_path / "out" / "debug" / "new" / "tensorboard").exists()  # stopped before any work


def test_evaluating_a_truncated_checkpoint_is_one_line(vae_ckpt, make_cfg, tmp_path, capsys):
    broken = truncated_copy(vae_ckpt, tmp_path / "half.ckpt")
    line = one_line_error(capsys, evaluate, make_cfg([f"ckpt_path={broken}", *QUICK_EVAL], name="evaluate"))
    assert line.startswith(f"airlab error: ckpt_path: {broken} is not a readable checkpoint ("), line


def test_resuming_a_missing_checkpoint_is_one_line(make_cfg, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "last.ckpt"
    line = one_line_error(capsys, train, make_cfg([*SHORT, f"ckpt_path={missing}"]))
    assert line == f"airlab error: ckpt_path: file not found: {missing}"


def test_resuming_with_a_model_the_checkpoint_does_not_fit_is_one_line(vae_ckpt, make_cfg, capsys):
    line = one_line_error(capsys, train, make_cfg([*SHORT, f"ckpt_path={vae_ckpt}", "model.z_dim=20"]))
    assert line.startswith(f"airlab error: ckpt_path: {vae_ckpt} does not fit the config:"), line
    assert "model.z_dim=20 (trained with 10)" in line
    assert re.search(r"parameter model\.\S+ has shape \[10, 32\] in the checkpoint but \[20, 32\]", line), (
        line
    )
    assert line.endswith("resume it with the config it was trained with")
