"""A variational autoencoder with the architecture of Pyro's VAE example.

Grey pixels meet a Bernoulli likelihood with ``validate_args=False``: the log-probability is then the
binary cross-entropy, which is what Pyro's example and most MNIST VAE papers report, although it is
not a normalised density over grey values. ``data.binarize=fixed|dynamic`` gives binary pixels and a
proper likelihood. ``likelihood_sd`` swaps it for AIR's Normal pixels, so that the VAE's ELBO on MultiMNIST
is a density of the same kind as AIR's.
"""

from __future__ import annotations

import math
from typing import Annotated

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from airlab.contracts.model import GenerativeModel
from airlab.contracts.options import UNITS, Range


class Encoder(nn.Module):
    """Image ``[B, x_dim]`` to the guide's ``z`` location and scale, each ``[B, z_dim]``."""

    def __init__(self, x_dim: int, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(x_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of ``q(z | x)``, each ``[B, z_dim]``; the scale is positive (``exp``)."""
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class Decoder(nn.Module):
    """Code ``z`` ``[B, z_dim]`` to Bernoulli pixel probabilities ``[B, x_dim]``."""

    def __init__(self, x_dim: int, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, x_dim)
        self.softplus = nn.Softplus()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities ``[B, x_dim]`` in ``(0, 1)``."""
        return torch.sigmoid(self.fc21(self.softplus(self.fc1(z))))


class VAE(GenerativeModel):
    """Pyro's VAE example: ``z ~ N(0, I)``, a Bernoulli decoder and a diagonal-Normal encoder."""

    has_latent_space = True
    can_reconstruct = True
    can_sample = True
    max_plate_nesting = 1
    supports_bare_trace_loop = True  # the model/guide of Pyro's example: the bare loop is its reference

    def __init__(
        self,
        image_shape: tuple[int, ...] = (1, 28, 28),
        z_dim: Annotated[int, UNITS] = 50,
        hidden_dim: Annotated[int, UNITS] = 400,
        scale_to_dataset: bool = False,
        beta: Annotated[float, Range(gt=0)] = 1.0,
        likelihood_sd: Annotated[float | None, Range(gt=0)] = None,
    ) -> None:
        super().__init__()
        self.beta = beta
        self.likelihood_sd = likelihood_sd
        self.image_shape = tuple(image_shape)
        self.x_dim = math.prod(self.image_shape)
        self.z_dim = z_dim
        self.encoder = Encoder(self.x_dim, z_dim, hidden_dim)
        self.decoder = Decoder(self.x_dim, z_dim, hidden_dim)
        self.scale_to_dataset = scale_to_dataset

    def model(self, images: torch.Tensor) -> None:
        """``p(x, z)``: ``z ~ N(0, I)`` per image; ``images`` are Bernoulli pixels of the decoded ``z``
        (Normal pixels around it with ``likelihood_sd``, AIR's observation model, when that is set)."""
        pyro.module("decoder", self.decoder)
        x = images.reshape(-1, self.x_dim)
        with pyro.plate("data", x.shape[0]):
            # z: [B, z_dim], one standard-normal code per image
            z_loc = x.new_zeros(x.shape[0], self.z_dim)
            # beta weights the KL term (Higgins et al. 2017): log p(z) here and log q(z) in the guide.
            with poutine.scale(scale=self.beta):
                z = pyro.sample("z", dist.Normal(z_loc, 1.0).to_event(1))
            probs = self.decoder(z)
            if self.likelihood_sd is not None:  # a density as AIR's: the two ELBOs are then comparable
                pyro.sample("x", dist.Normal(probs, self.likelihood_sd).to_event(1), obs=x)
                return
            # x: [B, x_dim]; grey pixels are allowed (see the module docstring)
            pyro.sample("x", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=x)

    def guide(self, images: torch.Tensor) -> None:
        """``q(z | x)``: a diagonal Normal from the encoder, one ``z`` per image."""
        pyro.module("encoder", self.encoder)
        x = images.reshape(-1, self.x_dim)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            with poutine.scale(scale=self.beta):
                pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))

    def score_dependencies(self) -> dict[str, list[str]]:
        """Every latent is reparameterised: there is no score-function term to weight."""
        return {}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Posterior means ``[B, z_dim]``."""
        return self.encoder(images.reshape(-1, self.x_dim))[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded pixel probabilities, shaped as images ``[N, *image_shape]``."""
        return self.decoder(z).reshape(-1, *self.image_shape)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded guide means for ``images``: ``[B, *image_shape]``."""
        return self.decode(self.encode(images))

    def sample(self, num_samples: int) -> torch.Tensor:
        """``num_samples`` prior draws, decoded: ``[num_samples, *image_shape]`` of pixel probabilities."""
        device = next(self.parameters()).device
        return self.decode(torch.randn(num_samples, self.z_dim, device=device))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The encoder's and decoder's parameters, by group name (for gradient-variance reports)."""
        return {
            "guide/encoder": list(self.encoder.parameters()),
            "model/decoder": list(self.decoder.parameters()),
        }
