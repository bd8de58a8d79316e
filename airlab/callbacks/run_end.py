"""The declared interface of callbacks that analyse the finished model once training is over."""

from __future__ import annotations

import pytorch_lightning as pl

#: The run's data module, when the task passes one.
Data = pl.LightningDataModule | None


class RunEndCallback(pl.Callback):
    """A callback with an ``on_run_end`` hook, which airlab's train task calls after fit and test.

    Work done there (e.g. the VAE's latent t-SNE) looks at the final weights and is not counted as
    training time. The train task selects these callbacks with ``isinstance``, not by probing methods.
    """

    def on_run_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule: Data = None) -> None:
        """Called once, after ``trainer.fit`` and ``trainer.test``; ``datamodule`` is the run's data."""
        raise NotImplementedError
