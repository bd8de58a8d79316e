"""Lightning's private pieces behind airlab.compat.lightning_internals still exist and behave as relied
on: the checkpoint callback's steps, a finished fit's loop progress, and the DDP launcher's command."""

from __future__ import annotations

import inspect

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies.launchers import subprocess_script
from torch.utils.data import DataLoader, TensorDataset

from airlab.compat.lightning_internals import (
    ModelCheckpointSteps,
    install_subprocess_command,
    reopen_stopped_epoch,
)


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recording(ModelCheckpointSteps):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.written: list[str] = []

    def write_file(self, trainer, filepath):
        self.written.append(filepath)
        super().write_file(trainer, filepath)

    def keeps_as_best(self, trainer, candidates):
        return False


def fit(tmp_path, max_steps: int, callbacks=()):
    data = DataLoader(TensorDataset(torch.ones(10, 1)), batch_size=2)  # 5 batches an epoch
    trainer = pl.Trainer(
        max_steps=max_steps,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(Tiny(), data)
    return trainer


def test_checkpoint_steps_write_through_the_hook_and_can_refuse_a_best(tmp_path):
    callback = Recording(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=2)
    trainer = fit(tmp_path, max_steps=4, callbacks=[callback])
    assert callback.written and all(p.endswith("last.ckpt") for p in callback.written)  # no best kept
    assert callback.last_saved_step == 4
    assert callback.step_already_saved(trainer)  # this step is on disk
    callback.save_last_now(trainer)  # saving again is allowed and writes last.ckpt
    assert callback.written[-1].endswith("last.ckpt")


def test_a_finished_fit_saves_the_loop_progress_reopen_stopped_epoch_rewrites(tmp_path):
    trainer = fit(tmp_path, max_steps=3)  # stopped in the middle of the first epoch
    path = tmp_path / "end.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    epochs = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    batches = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert batches["current"]["completed"] == 3
    assert epochs["current"]["processed"] == epochs["current"]["completed"] == 1  # counted as done
    reopen_stopped_epoch(checkpoint)
    assert epochs["current"]["processed"] == epochs["current"]["completed"] == 0  # resumes mid-epoch
    assert checkpoint["epoch"] == 0


def test_lightning_asks_the_hydra_command_hook_for_its_ddp_children():
    assert "_hydra_subprocess_cmd(" in inspect.getsource(subprocess_script)
    original = subprocess_script._hydra_subprocess_cmd

    def command(local_rank):
        return [f"rank{local_rank}"], "/"

    try:
        install_subprocess_command(command)
        assert subprocess_script._hydra_subprocess_cmd is command
    finally:
        subprocess_script._hydra_subprocess_cmd = original
