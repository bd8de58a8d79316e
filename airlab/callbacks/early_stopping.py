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

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        """Lightning's check, when enabled."""
        if self.enabled:
            super()._run_early_stopping_check(trainer)
