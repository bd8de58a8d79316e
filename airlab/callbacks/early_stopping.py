"""Early stopping on the optimised metric, off unless ``callbacks.early_stopping.enabled=true``."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping


class OptionalEarlyStopping(EarlyStopping):
    """Lightning's EarlyStopping (same keys) that does nothing while ``enabled`` is false, so that it can
    sit in ``configs/callbacks/default.yaml`` with its settings listed by ``--cfg job``. Enabled, it stops
    the fit after ``patience`` validations without an improvement of ``monitor`` by ``min_delta``."""

    def __init__(self, enabled: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.enabled = enabled

    # Lightning checks in these two hooks (which one depends on check_on_train_epoch_end).
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's check after validation, when enabled."""
        if self.enabled:
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's check at the end of a training epoch, when enabled."""
        if self.enabled:
            super().on_train_epoch_end(trainer, pl_module)
