"""Pyro SVI inside a LightningModule.

The estimator returns a surrogate loss tensor, and ``training_step`` returns it: Lightning then runs
the backward pass (synchronised across DDP ranks), gradient clipping, the optimizer step and the
``global_step`` count, exactly as for any other module. Learnable parameters live in the model's
``nn.Module`` tree, so checkpoints and optimizers see them. Pyro's param store only holds estimator
state (decaying-average baselines), which is saved alongside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import pyro
import pytorch_lightning as pl
import torch

from airlab.config.options import Range
from airlab.estimators import Estimator, elbo_estimate
from airlab.models.base import GenerativeModel

PARAM_STORE_KEY = "pyro_param_store"
CONFIG_KEY = "airlab_config"


class SVIModule(pl.LightningModule):
    """A generative model and its gradient estimator; Lightning runs the optimisation loop."""

    def __init__(
        self,
        model: GenerativeModel,
        estimator: Estimator,
        optimizer: Callable[..., torch.optim.Optimizer],
        baseline_lr: Annotated[float | None, Range(gt=0)] = None,
        num_train: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.estimator = estimator
        self.optimizer_factory = optimizer
        self.baseline_lr = baseline_lr
        self.num_train = num_train
        self.config = config or {}
        # Bound methods are new objects on every attribute access; compiled estimators key their
        # cache on the callable's identity, so keep one of each.
        self.model_fn = model.model
        self.guide_fn = model.guide
        self._pending_param_store: dict[str, torch.Tensor] = {}

    # -- the SVI step ---------------------------------------------------------------------------
    def loss_scale(self, batch_size: int) -> float:
        """N/B when the model's data plate stands for the whole training set, else 1."""
        if self.model.scale_to_dataset and self.num_train:
            return self.num_train / batch_size
        return 1.0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One SVI step: log ``train/loss`` and ``train/elbo`` per image; return the surrogate."""
        self.model.on_train_step(self.global_step)
        images = batch["image"]
        batch_size = images.shape[0]
        scale = self.loss_scale(batch_size)
        out = self.estimator(self.model_fn, self.guide_fn, images, scale=scale)
        loss_per_image = out.loss / (scale * batch_size)
        self.log("train/loss", loss_per_image, prog_bar=True, batch_size=batch_size)
        self.log("train/elbo", -loss_per_image, on_step=False, on_epoch=True, batch_size=batch_size)
        if out.baseline_loss is not None:
            self.log("train/baseline_loss", out.baseline_loss / batch_size, batch_size=batch_size)
        if out.guide_trace is not None:
            for name, value in self.model.training_metrics(out.guide_trace).items():
                self.log(f"train/{name}", value, batch_size=batch_size)
        return out.surrogate

    def _evaluation_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        images = batch["image"]
        batch_size = images.shape[0]
        elbo = elbo_estimate(self.model_fn, self.guide_fn, images) / batch_size
        self.log(f"{stage}/elbo", elbo, prog_bar=stage == "val", batch_size=batch_size)
        if self.estimator.reports_bound is not None:
            # The bound being trained, with its K particles, next to the ELBO.
            bound = -self.estimator(self.model_fn, self.guide_fn, images).loss / batch_size
            self.log(f"{stage}/{self.estimator.reports_bound}", bound, batch_size=batch_size)
        with torch.no_grad():
            metrics, outputs = self.model.evaluate(batch)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "count_accuracy", batch_size=batch_size)
        return outputs

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Log ``val/elbo``, the trained bound if reported, model metrics; return outputs for callbacks."""
        return self._evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Log ``test/elbo``, the trained bound if reported, model metrics; return outputs for callbacks."""
        return self._evaluation_step(batch, "test")

    # -- optimisation ---------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """``main`` at ``optim.lr``; ``baseline`` (if any) at ``optim.baseline_lr``."""
        baseline = list(self.model.baseline_parameters())
        baseline_ids = {id(p) for p in baseline}
        main = [p for p in self.model.parameters() if id(p) not in baseline_ids]
        groups = [{"params": main, "name": "main"}]
        if baseline:
            group = {"params": baseline, "name": "baseline"}
            if self.baseline_lr is not None:
                group["lr"] = self.baseline_lr
            groups.append(group)
        return groups

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The optimizer from ``optim``, over :meth:`parameter_groups`."""
        return self.optimizer_factory(self.parameter_groups())

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the estimator state in Pyro's param store (not module parameters) and the run's config."""
        module_tensors = {id(p) for p in self.parameters()}
        store = pyro.get_param_store()
        checkpoint[PARAM_STORE_KEY] = {
            name: store.get_param(name).detach().cpu().clone()
            for name in store.keys()
            if id(store._params[name]) not in module_tensors
        }
        checkpoint[CONFIG_KEY] = self.config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Applied once the module sits on its device (on_train_start / restore_param_store).
        """Hold the saved param-store entries until the module is on its device."""
        self._pending_param_store = dict(checkpoint.get(PARAM_STORE_KEY, {}))

    def restore_param_store(self) -> None:
        """Move the entries held by :meth:`on_load_checkpoint` into Pyro's param store, on this device."""
        store = pyro.get_param_store()
        for name, value in self._pending_param_store.items():
            store[name] = value.to(self.device)
        self._pending_param_store = {}

    def on_train_start(self) -> None:
        """Restore the estimator state from a resumed checkpoint before the first step."""
        self.restore_param_store()
