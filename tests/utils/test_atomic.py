"""A full disk or an unwritable folder ends a run in one line naming the path and the cause, exit 2;
the newest ``last.ckpt`` on disk stays loadable; a sweep records the job as failed. The faults are
injected (``ENOSPC`` at the second checkpoint write, at a TensorBoard event write)."""

from __future__ import annotations

import errno
import os

import pytest
import pytorch_lightning as pl
from torch.utils.tensorboard.writer import FileWriter

from airlab.errors import OutputError, run_hydra_app, unwritable
from airlab.resume.checkpoint import load_checkpoint
from airlab.tracking.sweep import FAILED_NAME, summarise_sweep
from airlab.training.run import train
from tests.conftest import FAST

FULL = "No space left on device"


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_last_checkpoint_survives(make_cfg, monkeypatch):
    cfg = make_cfg([*FAST, "seed=0", "callbacks.model_checkpoint.every_n_epochs=1"])
    real_save, calls = pl.Trainer.save_checkpoint, []

    def save(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) > 2:  # epoch 0 wrote last.ckpt and the best; the disk is full at epoch 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
        return real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", save)
    with pytest.raises(OutputError) as info:
        train(cfg)
    message = str(info.value)
    assert f"cannot write ({FULL})" in message and ".ckpt" in message and "\n" not in message
    last = load_checkpoint(os.path.join(cfg.paths.output_dir, "checkpoints", "last.ckpt"))
    assert last["global_step"] == 3  # the end of epoch 0, intact


def test_a_full_disk_at_an_event_write_is_one_line(make_cfg, monkeypatch):
    cfg = make_cfg([*FAST, "seed=0"])

    def add_event(self, event, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.get_logdir())

    monkeypatch.setattr(FileWriter, "add_event", add_event)
    with pytest.raises(OutputError, match=rf"tensorboard/: cannot write \({FULL}\); free space there"):
        train(cfg)


def test_errors_of_unwritable_places_are_recognised_through_their_causes():
    inner = OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/outputs")
    try:
        try:
            raise inner
        except OSError as err:
            raise RuntimeError("wrapped by a library") from err
    except RuntimeError as outer:
        assert unwritable(outer).startswith("/ro/outputs: cannot write (Read-only file system)")
    assert unwritable(ValueError("no")) is None and unwritable(OSError(errno.ENOENT, "x")) is None


def test_a_read_only_output_folder_is_one_line_exit_2(capsys):
    """Hydra makes the run directory before any airlab code runs: its OSError ends as one line too."""

    def main():
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/ro/outputs/train")

    with pytest.raises(SystemExit) as stop:
        run_hydra_app(main)
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [
        "airlab error: /data/ro/outputs/train: cannot write (Permission denied); free space there or point "
        "paths.root_dir (AIRLAB_ROOT) at a writable folder; the last checkpoint already on disk is intact"
    ]


def test_a_failed_job_is_a_failed_row_of_summary_csv(tmp_path):
    for num, failed in ((0, None), (1, f"outputs/x/1/checkpoints/last.ckpt: cannot write ({FULL})")):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={num}\n")
        if failed:
            (job / FAILED_NAME).write_text(failed + "\n")
        else:
            (job / "metrics.json").write_text('{"val/elbo": -100.0}')
    text = summarise_sweep(tmp_path).read_text()
    assert f"failed: outputs/x/1/checkpoints/last.ckpt: cannot write ({FULL})" in text
    assert "-100.0" in text
