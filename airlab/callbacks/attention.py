"""AIR's validation pictures and count statistics in TensorBoard.

Both belong to AIR's callback set (``configs/model_callbacks/air/default.yaml``) and refuse, in one
line, a model that does not declare ``has_object_counts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import pytorch_lightning as pl
import torch

from airlab.callbacks.images import Batch, EpochImageLogger, picture_writers
from airlab.contracts.options import Range
from airlab.errors import ConfigError
from airlab.evaluation.air_pictures import attention_grid, boxed, windows_grid
from airlab.evaluation.counts import count_confusion
from airlab.utils.figures import PICTURE_SCALE, confusion_figure, image_grid

if TYPE_CHECKING:
    from airlab.callbacks.images import Writers


def require_object_counts(pl_module: pl.LightningModule, key: str) -> None:
    """Refuse, in one line, a model that does not declare ``has_object_counts``."""
    model = pl_module.model
    if not model.has_object_counts:
        raise ConfigError(
            f"callbacks.{key}",
            f"model={type(model).__name__.lower()} infers no object counts; use callbacks.{key}=null",
        )


class CountLogger(pl.Callback):
    """``val/count_confusion`` (true x inferred counts, an image) and ``val/inferred_count`` (histogram),
    over every validation image, from the outputs of ``validation_step``."""

    def __init__(self) -> None:
        self._inferred: list[torch.Tensor] = []
        self._true: list[torch.Tensor] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse a model that infers no object counts."""
        require_object_counts(pl_module, "counts")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start collecting this validation's counts afresh."""
        self._inferred, self._true = [], []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the batch's inferred and true counts (from ``validation_step``'s outputs), on the CPU."""
        if isinstance(outputs, dict) and "inferred_count" in outputs:
            self._inferred.append(outputs["inferred_count"].detach().cpu())
            self._true.append(outputs["true_count"].detach().cpu())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the confusion figure and the inferred-count histogram (rank zero, not during sanity checks)."""
        if trainer.sanity_checking or not self._inferred or not trainer.is_global_zero:
            return
        inferred, true = torch.cat(self._inferred), torch.cat(self._true)
        max_count = int(max(pl_module.model.max_steps, true.max()))
        confusion = count_confusion(inferred, true, max_count)
        for writer in picture_writers(trainer):
            writer.add_figure("val/count_confusion", confusion_figure(confusion), trainer.global_step)
            writer.add_histogram(
                "val/inferred_count",
                inferred.float(),
                trainer.global_step,
                bins=torch.arange(-0.5, max_count + 1.0).numpy(),
            )


class AttentionLogger(EpochImageLogger):
    """``val/attention``: inputs (top) and reconstructions (bottom) with one coloured box per step;
    ``val/windows``: per image, the input and the decoded window of each step in its box colour;
    ``val/count_errors``: up to ``num_errors`` validation images whose inferred count is wrong."""

    def __init__(
        self,
        num_images: Annotated[int, Range(ge=1)] = 16,
        every_n_epochs: Annotated[int, Range(ge=1)] = 1,
        num_errors: Annotated[int, Range(ge=1)] = 8,
        picture_scale: Annotated[int, Range(ge=1)] = PICTURE_SCALE,
    ) -> None:
        super().__init__(num_images=num_images, every_n_epochs=every_n_epochs, picture_scale=picture_scale)
        self.num_errors = num_errors

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse a model that infers no object counts."""
        require_object_counts(pl_module, "attention")

    def log_images(self, writers: Writers, batch: Batch, pl_module: pl.LightningModule, step: int) -> None:
        """Log the attention, window and count-error pictures for ``batch``; skipped without true counts."""
        model = pl_module.model
        if "count" not in batch:
            return
        images = batch["image"].to(pl_module.device)
        inferred = model.infer(images)
        top, bottom = boxed(images, inferred)
        grid = attention_grid(images, inferred, (top, bottom))
        windows = windows_grid(images, inferred, top)
        wrong = (inferred["count"].cpu() != batch["count"].cpu()).nonzero().flatten()[: self.num_errors]
        self.add_grid(writers, "val/attention", grid, step)
        self.add_grid(writers, "val/windows", windows, step)
        if len(wrong):
            errors = torch.cat([top[wrong], bottom[wrong]])
            self.add_grid(writers, "val/count_errors", image_grid(errors, nrow=len(wrong)), step)
