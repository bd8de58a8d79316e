"""Log reconstructions and prior samples of the validation images to TensorBoard (and MLflow)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import pytorch_lightning as pl
import torch

from airlab.contracts.options import Range
from airlab.resume.rng import preserved_rng
from airlab.utils.figures import PICTURE_SCALE, image_grid, labelled_rows_figure, reconstruction_grid, upscale

if TYPE_CHECKING:
    from torch.utils.data import DataLoader
    from torch.utils.tensorboard import SummaryWriter

    #: The TensorBoard writers pictures go to.
    Writers = Sequence[SummaryWriter]

log = logging.getLogger(__name__)

#: A batch of the validation loader: tensors by name (``image``, and ``count`` or ``label``).
Batch = dict[str, torch.Tensor]


def tensorboard_writers(trainer: pl.Trainer) -> list[SummaryWriter]:
    """The SummaryWriters of the trainer's TensorBoard loggers (none with logger=csv|none)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def picture_writers(trainer: pl.Trainer) -> list[Any]:
    """Where every picture callback writes: the TensorBoard SummaryWriters plus, with logger=mlflow or
    logger=many, a writer per MLflow run that stores the same pictures as PNG artifacts (and one per
    wandb run)."""
    from airlab.tracking.trackers import tracker_picture_writers

    return [*tensorboard_writers(trainer), *tracker_picture_writers(trainer)]


def validation_loader(trainer: pl.Trainer) -> DataLoader | None:
    """The trainer's (first) validation dataloader, or None."""
    loaders = trainer.val_dataloaders
    if isinstance(loaders, list | tuple):
        loaders = loaders[0] if loaders else None
    return loaders


def first_val_batch(trainer: pl.Trainer, num_images: int) -> dict[str, torch.Tensor] | None:
    """The first ``num_images`` of the first validation batch, or None without a validation loader."""
    loader = validation_loader(trainer)
    if loader is None:
        return None
    batch = next(iter(loader))
    return {name: value[:num_images] for name, value in batch.items()}


class EpochImageLogger(pl.Callback):
    """Logs pictures after every ``every_n_epochs``-th validation and once more when training ends.

    Encoding PNGs costs tens of milliseconds, a sizeable share of a short MNIST epoch, hence the
    interval. Pictures are enlarged ``picture_scale`` times, as evaluate's PNGs are. Subclasses implement
    ``log_images`` and write their grids with ``add_grid``.
    """

    def __init__(
        self,
        num_images: Annotated[int, Range(ge=1)] = 16,
        every_n_epochs: Annotated[int, Range(ge=1)] = 5,
        picture_scale: Annotated[int, Range(ge=1)] = PICTURE_SCALE,
    ) -> None:
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.picture_scale = picture_scale
        self._last_logged_step = -1

    def add_grid(self, writers: Sequence[SummaryWriter], tag: str, grid: torch.Tensor, step: int) -> None:
        """Write ``grid`` to every writer under ``tag``, enlarged ``picture_scale`` times."""
        grid = upscale(grid, self.picture_scale)
        for writer in writers:
            writer.add_image(tag, grid, step)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log pictures at every ``every_n_epochs``-th epoch (not during sanity checks)."""
        if not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log pictures of the final weights, unless that step was already logged."""
        self._log(trainer, pl_module)

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_logged_step == trainer.global_step or not trainer.is_global_zero:
            return
        writers = picture_writers(trainer)
        batch = first_val_batch(trainer, self.num_images) if writers else None
        if batch is None:
            return
        self._last_logged_step = trainer.global_step
        was_training = pl_module.training
        pl_module.eval()
        # Pictures sample latents; training (and a resumed run) must not see them in its random stream.
        with torch.no_grad(), preserved_rng():
            self.log_images(writers, batch, pl_module, trainer.global_step)
        pl_module.train(was_training)

    def log_images(self, writers: Writers, batch: Batch, pl_module: pl.LightningModule, step: int) -> None:
        """Write pictures of ``batch`` (the first ``num_images`` validation images) at ``step``."""
        raise NotImplementedError


class ReconstructionLogger(EpochImageLogger):
    """``val/reconstructions`` (inputs above reconstructions) for a model that declares
    ``can_reconstruct``, and ``val/samples`` (prior draws) for one that declares ``can_sample``; a model
    that declares neither gets neither (one log line says so)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Say once when the model declares none of the pictures this callback draws."""
        model = pl_module.model
        if not (model.can_reconstruct or model.can_sample):
            log.info(
                "callbacks.reconstructions: %s declares neither can_reconstruct nor can_sample; no pictures",
                type(model).__name__,
            )

    def log_images(self, writers: Writers, batch: Batch, pl_module: pl.LightningModule, step: int) -> None:
        """Log inputs above their reconstructions, and ``num_images`` prior samples (as declared)."""
        model = pl_module.model
        if model.can_reconstruct:
            inputs = tuple(x.to(pl_module.device) for x in model.batch_inputs(batch))
            grid = reconstruction_grid(inputs[0], model.reconstruct(*inputs))
            self.add_grid(writers, "val/reconstructions", grid, step)
        if not model.can_sample:
            return
        rows = model.sample_rows(self.num_images)
        if len(rows) == 1:
            self.add_grid(writers, "val/samples", image_grid(next(iter(rows.values()))), step)
            return
        # Labelled rows (AIR: a row per number of objects), as one picture.
        for writer in writers:
            figure = labelled_rows_figure(rows, "prior samples")
            writer.add_figure("val/samples", figure, step)
