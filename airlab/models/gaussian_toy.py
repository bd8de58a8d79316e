"""Rainforth et al. (2018), Section 4: the linear-Gaussian toy whose IWAE gradients have a known SNR.

The generative story is ``z ~ N(mu, I)``, ``x | z ~ N(z, I)`` in D dimensions, so the evidence is exact,
``p(x) = N(x; mu, 2 I)``, and so is the posterior, ``N((x + mu) / 2, I / 2)``. The guide is an affine
encoder with a *fixed* spread, ``q(z | x) = N(A x + b, v I)``. Rainforth et al. write ``2/3 I`` for it;
airlab reads that as the covariance (``encoder_variance = 2/3``, a standard deviation of about 0.816;
vlievin/ovis reads it as the standard deviation instead).

The optimum of every bound is ``mu* = mean(x)``, ``A* = I/2``, ``b* = mu*/2``: the guide's mean is then
the exact posterior mean, and only its spread is wrong. The model starts there, with every entry moved by
``perturbation * N(0, 1)`` (drawn from the task's seeded generator), so that the gradients have a small,
known signal to measure against their noise (``report=snr_gaussian_toy``).
"""

from __future__ import annotations

import math
from typing import Annotated

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from airlab.contracts.model import GenerativeModel
from airlab.contracts.options import Range


class GaussianToy(GenerativeModel):
    """``z ~ N(mu, I)``, ``x | z ~ N(z, I)``; guide ``N(A x + b, encoder_variance * I)``."""

    inputs = ("x",)
    max_plate_nesting = 1
    initialises_from_data = True
    headline_metrics = ("log_likelihood",)

    def __init__(
        self,
        data_shape: tuple[int, ...] = (20,),
        encoder_variance: Annotated[float, Range(gt=0)] = 2.0 / 3.0,
        perturbation: Annotated[float, Range(ge=0)] = 0.01,
    ) -> None:
        super().__init__()
        if len(data_shape) != 1:
            raise ValueError(f"GaussianToy models vectors, got items of shape {tuple(data_shape)}")
        (dim,) = data_shape
        self.dim = dim
        self.encoder_scale = math.sqrt(encoder_variance)
        self.perturbation = perturbation
        self.mu = nn.Parameter(torch.zeros(dim))  # the decoder: the prior's mean
        self.A = nn.Parameter(torch.eye(dim) / 2)  # the encoder: its weights ...
        self.b = nn.Parameter(torch.zeros(dim))  # ... and its bias

    def initialise_from_data(self, x: torch.Tensor) -> None:
        """Put the parameters at the optimum for the training points ``x`` ``[N, D]``, then perturb each
        entry by ``perturbation * N(0, 1)``."""
        with torch.no_grad():
            optimum_mu = x.mean(0)
            for param, optimum in (
                (self.mu, optimum_mu),
                (self.A, torch.eye(self.dim) / 2),
                (self.b, optimum_mu / 2),
            ):
                param.copy_(optimum + self.perturbation * torch.randn_like(param))

    def model(self, x: torch.Tensor) -> None:
        """``p(x, z)`` for a batch of vectors ``x`` ``[B, D]``."""
        pyro.module("gaussian_toy", self)
        with pyro.plate("data", x.shape[0]):
            # z: [B, D]
            z = pyro.sample("z", dist.Normal(self.mu, 1.0).expand([x.shape[0], self.dim]).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """``q(z | x)``: the affine encoder's mean and the fixed spread."""
        pyro.module("gaussian_toy", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ self.A.T + self.b, self.encoder_scale).to_event(1))

    def score_dependencies(self) -> dict[str, list[str]]:
        """``z`` is reparameterised: there is no score-function term."""
        return {}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Rainforth et al.'s two groups, ``encoder`` (``b``) and ``decoder`` (``mu``), and ``A`` apart."""
        return {"encoder": [self.b], "decoder": [self.mu], "encoder_weights": [self.A]}

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """The exact ``log p(x)`` per vector, ``[B]``: ``N(x; mu, 2 I)``."""
        return dist.Normal(self.mu, math.sqrt(2.0)).log_prob(x).sum(-1)

    def evaluate(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``log_likelihood``: the exact evidence per vector, against which every bound can be read."""
        return {"log_likelihood": self.log_likelihood(batch["x"]).mean()}, {}
