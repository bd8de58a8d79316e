"""Checkpoints at an interval, and always at the end of training."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class IntervalCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also saves when training ends between intervals.

    Writing a checkpoint of the VAE takes about 15 ms, several per cent of a short MNIST epoch, so
    the default config saves every few epochs. Lightning alone would then leave ``last.ckpt`` behind
    the final weights (and miss the end of a run stopped by ``max_steps`` or ``max_time``); this
    saves the top-k candidate and ``last.ckpt`` at the end unless that step was already saved.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the top-k candidate and ``last.ckpt`` for the final step unless already saved."""
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            if self.monitor is None or self.monitor in candidates:
                self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)
