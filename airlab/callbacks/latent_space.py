"""The VAE's latent space at the end of training: t-SNE, projector embedding, traversal, interpolation.

It belongs to the VAE's callback set (``configs/model_callbacks/vae/default.yaml``) and refuses, in one
line, a model that does not declare ``has_latent_space``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import pytorch_lightning as pl
import torch

from airlab.callbacks.images import picture_writers, validation_loader
from airlab.callbacks.run_end import Data, RunEndCallback
from airlab.contracts.options import Range
from airlab.errors import ConfigError
from airlab.evaluation.latent_pictures import latent_pictures, latent_tsne
from airlab.utils.figures import PICTURE_SCALE, upscale

log = logging.getLogger(__name__)


class LatentSpaceLogger(RunEndCallback):
    """``val/latent_tsne`` (and ``latent_tsne.png`` in ``output_dir``), the projector embedding of the
    posterior means with digit sprites, and ``val/latent_traversal`` / ``val/interpolation``.

    Runs once the run is over (``on_run_end``, which airlab's train task calls after fit and test, so
    that the analysis is not counted as training time), and also after every ``every_n_epochs``-th
    validation if that is > 0. t-SNE of ``num_points`` validation images costs about 4 s for 1000
    points on 2 CPU cores (about 20 s for 2000).
    """

    def __init__(
        self,
        enabled: bool = True,
        num_points: int = 1000,
        every_n_epochs: int = 0,
        output_dir: str | None = None,
        seed: int = 0,
        perplexity: float = 30.0,
        pictures: bool = True,
        picture_scale: Annotated[int, Range(ge=1)] = PICTURE_SCALE,
    ) -> None:
        self.enabled = enabled
        self.num_points = num_points
        self.every_n_epochs = every_n_epochs
        self.output_dir = output_dir
        self.seed = seed
        self.perplexity = perplexity
        self.pictures = pictures
        self.picture_scale = picture_scale
        self._last_logged_step = -1
        self.last_result = None  # the latest TSNEResult, for tests and notebooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse a model without a latent space (``GenerativeModel.has_latent_space``)."""
        model = pl_module.model
        if not model.has_latent_space:
            raise ConfigError(
                "callbacks.latent_tsne",
                f"model={type(model).__name__.lower()} declares no latent space to embed; "
                "use callbacks.latent_tsne=null",
            )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the t-SNE at every ``every_n_epochs``-th epoch (0: only at the end of the run)."""
        every = self.every_n_epochs
        if every > 0 and not trainer.sanity_checking and trainer.current_epoch % every == 0:
            self._log(trainer, pl_module)

    def on_run_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule: Data = None) -> None:
        """The t-SNE and pictures of the final model, over ``datamodule``'s validation images."""
        loader = datamodule.val_dataloader() if datamodule is not None else None
        self._log(trainer, pl_module, loader)

    def _log(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loader: Iterable[Any] | None = None
    ) -> None:
        model = pl_module.model
        if not self.enabled or not trainer.is_global_zero:
            return
        loader = loader if loader is not None else validation_loader(trainer)
        if loader is None or self._last_logged_step == trainer.global_step:
            return
        self._last_logged_step = trainer.global_step
        writers = picture_writers(trainer)
        path = Path(self.output_dir) / "latent_tsne.png" if self.output_dir else None
        # progress=False: a second rich live display would clash with Lightning's progress bar.
        result = latent_tsne(
            model,
            loader,
            self.num_points,
            seed=self.seed,
            perplexity=self.perplexity,
            output_path=path,
            writers=writers,
            step=trainer.global_step,
            progress=False,
        )
        self.last_result = result
        log.info("latent t-SNE of %d images took %.1f s", len(result.embedding), result.seconds)
        if self.pictures and writers:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                grids = latent_pictures(model, result.latents)
            model.train(was_training)
            for writer in writers:
                for name, grid in grids.items():
                    writer.add_image(f"val/{name}", upscale(grid, self.picture_scale), trainer.global_step)
