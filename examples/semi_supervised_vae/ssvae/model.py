"""Model M2 of Kingma et al. (2014), "Semi-supervised learning with deep generative models", and the
same classifier network trained on the labelled digits alone.

M2's story: a digit's class ``y`` and its style ``z`` are independent a priori; the pixels depend on
both. The class is observed for the few labelled digits and latent for the rest, so one batch mixes
both kinds: ``label`` is the class, or -1 where it is unknown.

The guide's class site ``y`` is marked for parallel enumeration: ``elbo=trace_enum`` sums it out over
the ten classes, and ``elbo=tracegraph`` (which ignores the mark) samples it, with a learned baseline
when ``baseline=nvil``. On a labelled digit the site is a dummy: prior and guide are the same uniform
distribution there and the class used downstream is the label, so it adds nothing to the ELBO, its
value or its gradient, under either estimator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from airlab import GenerativeModel, OneOf, Range


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with Softplus between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class SemiSupervisedVAE(GenerativeModel):
    """M2: ``y ~ Cat(1/K)``, ``z ~ N(0, I)``, ``x ~ Bernoulli(decoder(z, y))``; ``q(y | x) q(z | x, y)``."""

    inputs = ("image", "label")
    has_discrete_latents = True
    supports_vectorized_particles = False
    max_plate_nesting = 1
    can_reconstruct = True
    can_sample = True
    baseline_option = "baseline"
    baseline_kinds = {"nvil": "learned"}

    def __init__(
        self,
        image_shape: tuple[int, ...] = (1, 28, 28),
        z_dim: Annotated[int, Range(ge=1)] = 50,
        hidden_dim: Annotated[int, Range(ge=1)] = 500,
        num_classes: Annotated[int, Range(ge=2)] = 10,
        classifier_weight: Annotated[float, Range(ge=0)] = 50.0,
        baseline: Annotated[str, OneOf(("none", "nvil"))] = "none",
        baseline_hidden: Annotated[int, Range(ge=1)] = 200,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.x_dim = int(torch.tensor(self.image_shape).prod())
        self.z_dim, self.num_classes = z_dim, num_classes
        self.classifier_weight = classifier_weight
        self.classifier = mlp([self.x_dim, hidden_dim, num_classes])  # q(y | x)
        self.encoder = mlp([self.x_dim + num_classes, hidden_dim, 2 * z_dim])  # q(z | x, y)
        self.decoder = mlp([z_dim + num_classes, hidden_dim, self.x_dim])  # p(x | z, y)
        self.baseline_net = mlp([self.x_dim, baseline_hidden, 1]) if baseline == "nvil" else None

    def _class(self, labels: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The class each digit is decoded with: its label where known, else the latent ``y``."""
        return torch.where(labels >= 0, labels, y)

    def model(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        pyro.module("ssvae", self)
        batch = images.shape[0]
        x = images.reshape(batch, -1)
        labelled = labels >= 0
        uniform = x.new_zeros(batch, self.num_classes)
        with pyro.plate("data", batch):
            y = pyro.sample("y", dist.Categorical(logits=uniform))
            pyro.sample("y_label", dist.Categorical(logits=uniform).mask(labelled), obs=labels.clamp(min=0))
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            # Under enumeration y (and z) carry a class dimension on the left: [K, B] and [K, B, z_dim].
            one_hot = F.one_hot(self._class(labels, y), self.num_classes).to(x)
            logits = self.decoder(torch.cat([z, one_hot], -1))
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
            if self.training and self.classifier_weight > 0:
                # Kingma et al.'s extra term: the classifier also learns from the labels directly (the
                # ELBO alone trains q(y | x) only through the unlabelled digits).
                log_q = dist.Categorical(logits=self.classifier(x)).log_prob(labels.clamp(min=0))
                pyro.factor("classifier", self.classifier_weight * log_q * labelled.to(x))

    def guide(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        pyro.module("ssvae", self)
        batch = images.shape[0]
        x = images.reshape(batch, -1)
        labelled = labels >= 0
        infer: dict = {"enumerate": "parallel"}
        if self.baseline_net is not None:
            infer["baseline"] = {"baseline_value": self.baseline_net(x).squeeze(-1)}
        with pyro.plate("data", batch):
            logits = self.classifier(x).masked_fill(labelled[:, None], 0.0)  # uniform where labelled
            y = pyro.sample("y", dist.Categorical(logits=logits), infer=infer)
            one_hot = F.one_hot(self._class(labels, y), self.num_classes).to(x)
            pixels = x.expand(*one_hot.shape[:-1], -1)  # [K, B, x_dim] under enumeration
            loc, scale = self.encoder(torch.cat([pixels, one_hot], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(scale) + 1e-4).to_event(1))

    def baseline_parameters(self) -> Iterator[nn.Parameter]:
        """The NVIL baseline's parameters, trained at ``optim.baseline_lr``."""
        return iter(()) if self.baseline_net is None else self.baseline_net.parameters()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's most probable class of each image: ``[B]``."""
        return self.classifier(images.reshape(images.shape[0], -1)).argmax(-1)

    def evaluate(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
        """``val/accuracy`` and ``test/accuracy``: the classifier against the labels."""
        correct = (self.predict(batch["image"]) == batch["label"]).float()
        return {"accuracy": correct.mean()}, {}

    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Decoded posterior means, with the label (or the predicted class where there is none)."""
        x = images.reshape(images.shape[0], -1)
        y = F.one_hot(self._class(labels, self.predict(images)), self.num_classes).to(x)
        loc, _ = self.encoder(torch.cat([x, y], -1)).chunk(2, -1)
        return torch.sigmoid(self.decoder(torch.cat([loc, y], -1))).reshape(-1, *self.image_shape)

    def sample(self, num_samples: int) -> torch.Tensor:
        """Prior draws, the classes in turn (0, 1, ..., K - 1, 0, ...)."""
        device = next(self.parameters()).device
        y = F.one_hot(torch.arange(num_samples, device=device) % self.num_classes, self.num_classes).float()
        z = torch.randn(num_samples, self.z_dim, device=device)
        return torch.sigmoid(self.decoder(torch.cat([z, y], -1))).reshape(-1, *self.image_shape)


class LabelledClassifier(GenerativeModel):
    """M2's classifier network alone, trained by maximum likelihood on the labelled digits: a Pyro model
    with an observed class and no latent at all (its ELBO is the log-likelihood)."""

    inputs = ("image", "label")
    max_plate_nesting = 1

    def __init__(
        self,
        image_shape: tuple[int, ...] = (1, 28, 28),
        hidden_dim: Annotated[int, Range(ge=1)] = 500,
        num_classes: Annotated[int, Range(ge=2)] = 10,
    ) -> None:
        super().__init__()
        x_dim = int(torch.tensor(tuple(image_shape)).prod())
        self.classifier = mlp([x_dim, hidden_dim, num_classes])

    def model(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        pyro.module("classifier", self)
        batch = images.shape[0]
        with pyro.plate("data", batch):
            logits = self.classifier(images.reshape(batch, -1))
            pyro.sample("y", dist.Categorical(logits=logits).mask(labels >= 0), obs=labels.clamp(min=0))

    def guide(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        pyro.module("classifier", self)  # nothing is latent

    def evaluate(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
        """``val/accuracy`` and ``test/accuracy``."""
        logits = self.classifier(batch["image"].reshape(batch["image"].shape[0], -1))
        return {"accuracy": (logits.argmax(-1) == batch["label"]).float().mean()}, {}
