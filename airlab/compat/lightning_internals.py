"""Lightning's private names that airlab relies on: the checkpoint callback's steps, the loop-progress
entries of a checkpoint, and the command of the processes its DDP launcher starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor


class ModelCheckpointSteps(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with its private steps under public names, to override or call.

    Lightning offers no public hook for how a file is written (``_save_checkpoint``), for refusing a
    best candidate (``_save_topk_checkpoint``), or for saving now outside its own triggers; the
    interval checkpoint (:mod:`airlab.resume.interval_checkpoint`) needs all three.
    """

    def write_file(self, trainer: pl.Trainer, filepath: str) -> None:
        """Write the checkpoint to ``filepath`` (Lightning: ``trainer.save_checkpoint``)."""
        trainer.save_checkpoint(filepath, self.save_weights_only)

    def keeps_as_best(self, trainer: pl.Trainer, candidates: dict[str, Tensor]) -> bool:
        """Whether this step may become a top-k (best) checkpoint; by default always."""
        return True

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # Lightning 2.x's body, with the write itself under a public name.
        self.write_file(trainer, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        if self.keeps_as_best(trainer, monitor_candidates):
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    def step_already_saved(self, trainer: pl.Trainer) -> bool:
        """Whether saving now would be skipped: this step is saved, or the trainer is sanity-checking,
        in fast-dev-run, or not saving (Lightning's ``_should_skip_saving_checkpoint``)."""
        return self._should_skip_saving_checkpoint(trainer)

    def save_best_candidate_now(self, trainer: pl.Trainer) -> None:
        """Offer this step as a top-k checkpoint, when its monitored value was logged."""
        candidates = self._monitor_candidates(trainer)
        if self.monitor is None or self.monitor in candidates:
            self._save_topk_checkpoint(trainer, candidates)

    def save_last_now(self, trainer: pl.Trainer) -> None:
        """Save ``last.ckpt`` for this step (when ``save_last`` is on)."""
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @property
    def last_saved_step(self) -> int:
        """The global step of the last file this callback wrote."""
        return self._last_global_step_saved


def install_subprocess_command(command: Callable[[int], tuple[list[str], str]]) -> None:
    """Make Lightning's DDP launcher start its processes with ``command(local_rank)`` -> (argv, cwd).

    Lightning calls the private ``_hydra_subprocess_cmd`` when the script runs under Hydra; its own
    version re-runs the whole command line, which inside a multirun re-runs the sweep in every child
    (:mod:`airlab.training.ddp`)."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = command


def reopen_stopped_epoch(checkpoint: dict[str, Any]) -> None:
    """Make the loop state of a checkpoint saved after training ended (``max_steps``, ``max_time``,
    ``max_epochs``) resume as an uninterrupted run would continue.

    Lightning counts the last epoch as processed and completed once its loop ends, for whatever
    reason, and keeps its batch count. Resumed as saved, a run stopped midway would start the next
    epoch (skipping the rest of this one), and one stopped at an epoch's end would run an empty epoch
    (an epoch number and a validation that the uninterrupted run does not have). Here the first is
    marked as a mid-epoch save marks it (started, not processed), and the second as between epochs.
    The entries are Lightning 2.x's fit-loop progress (``loops.fit_loop``), which it documents nowhere.
    """
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs, batches = loop.get("epoch_progress"), loop.get("epoch_loop.batch_progress")
    if not epochs or not batches or batches["current"]["completed"] == 0:
        return  # no batch of this epoch ran yet
    current = epochs["current"]
    if not current["started"] == current["processed"] == current["completed"]:
        return  # the epoch is still running: a save during the epoch or at its end, before on_train_end
    if batches.get("is_last_batch", True):
        for key in batches["current"]:
            batches["current"][key] = 0
        batches["is_last_batch"] = False
        return
    for progress in (epochs["total"], current):
        progress["processed"] -= 1
        progress["completed"] -= 1
    checkpoint["epoch"] = current["completed"]
