"""What the training glue needs from a model.

A ``GenerativeModel`` is an ``nn.Module`` that owns every learnable parameter (registered with
``pyro.module`` inside ``model``/``guide``), so Lightning's optimizer, checkpoints and DDP see them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from airlab.errors import ConfigError


class GenerativeModel(nn.Module):
    #: True when the guide has sample sites without ``rsample`` (score-function gradients).
    has_discrete_latents: bool = False
    #: Multiply log-densities by N/B (a subsampled data plate) during training.
    scale_to_dataset: bool = False
    #: Per-image annotations the model's metrics need from the data module (e.g. AIR's ``count``).
    required_annotations: tuple[str, ...] = ()

    def check_annotations(self, datamodule: object) -> None:
        """Refuse, in one line, a data module whose images lack the annotations this model needs."""
        missing = [k for k in self.required_annotations if k not in getattr(datamodule, "annotations", ())]
        if missing:
            raise ConfigError(
                "data",
                f"model={type(self).__name__.lower()} needs images annotated with "
                f"{', '.join(missing)}; use data=multimnist",
            )

    def model(self, images: torch.Tensor) -> None:
        """The generative story for a batch ``[B, C, H, W]`` of images."""
        raise NotImplementedError

    def guide(self, images: torch.Tensor) -> None:
        """The amortised posterior for the same batch."""
        raise NotImplementedError

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decode a posterior draw (or mean) of each image; same shape as ``images``."""
        raise NotImplementedError

    def sample(self, num_samples: int) -> torch.Tensor:
        """Images decoded from prior draws, ``[num_samples, C, H, W]``."""
        raise NotImplementedError

    def baseline_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained at ``optim.baseline_lr`` (variance-reduction baselines)."""
        return iter(())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role (e.g. ``guide/encoder``), for gradient-variance monitoring."""
        return {"all": list(self.parameters())}

    def evaluate(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Model-specific evaluation of a batch: (scalar metrics logged as ``val/<name>``, averaged
        over the epoch; per-image outputs handed to callbacks through ``on_validation_batch_end``)."""
        return {}, {}

    def score_dependencies(self) -> dict[str, list[str]] | None:
        """For each guide site sampled without ``rsample``, every sample site (model or guide) whose
        log-density depends on its value: its downstream cost under ``elbo=tracegraph``.

        ``None`` (the default) declares nothing, and ``tracegraph`` then tracks provenance at run time
        to find the same terms, at a cost. A declaration must name every such term (a missing one
        biases the gradient); ``tests/test_air_fast_step.py`` shows how to check one against Pyro.
        """
        return None

    def training_metrics(self, guide_trace) -> dict[str, torch.Tensor]:
        """Extra per-step metrics read off the guide trace, logged under ``train/``."""
        return {}

    def on_train_step(self, global_step: int) -> None:
        """Called before each training step, e.g. to anneal a prior."""
