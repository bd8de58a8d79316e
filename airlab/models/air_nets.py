"""The neural networks inside AIR: the window decoder and encoder, the guide's per-step heads, and the
NVIL baseline. The probabilistic story that uses them is in ``air.py``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def mlp(sizes: Sequence[int], final_activation: bool = False) -> nn.Sequential:
    """Linear layers with ReLUs between them (and after the last one if ``final_activation``)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class WindowDecoder(nn.Module):
    """z_what -> a window of pixel intensities ``[B, w, w]``."""

    def __init__(
        self, z_what_dim: int, hidden: Sequence[int], window_size: int, sigmoid: bool, output_bias: float
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.net = mlp([z_what_dim, *hidden, window_size**2])
        self.sigmoid = sigmoid
        # A negative bias before the sigmoid starts every window nearly blank, so early objects
        # do not paint the whole canvas grey.
        self.output_bias = output_bias

    def forward(self, z_what: torch.Tensor) -> torch.Tensor:
        out = self.net(z_what) + self.output_bias
        if self.sigmoid:
            out = torch.sigmoid(out)
        return out.view(-1, self.window_size, self.window_size)


class WindowEncoder(nn.Module):
    """A cropped window -> the loc and scale of q(z_what)."""

    def __init__(self, window_size: int, hidden: Sequence[int], z_what_dim: int) -> None:
        super().__init__()
        self.net = mlp([window_size**2, *hidden, 2 * z_what_dim])

    def forward(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(window.flatten(1)).chunk(2, -1)
        return loc, F.softplus(raw_scale) + 1e-4


class StepPredictor(nn.Module):
    """The guide's head on the recurrent state: the presence probability and q(z_where).

    A shared hidden layer feeds separate output layers, so that the gradient of each latent's
    proposal can be monitored on its own parameters (``guide/z_pres``, ``guide/z_where``).
    """

    def __init__(self, rnn_hidden: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.trunk = mlp([rnn_hidden, *hidden], final_activation=True)
        width = hidden[-1] if hidden else rnn_hidden
        self.z_pres_head = nn.Linear(width, 1)
        self.z_where_head = nn.Linear(width, 6)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.trunk(h)
        z_pres_prob = torch.sigmoid(self.z_pres_head(features))
        where_loc, where_scale = self.z_where_head(features).chunk(2, -1)
        return z_pres_prob, where_loc, F.softplus(where_scale) + 1e-4


class NVILBaseline(nn.Module):
    """A separate recurrent network that predicts each step's downstream cost (Mnih & Gregor 2014).

    It reads the same inputs as the guide's LSTM, detached: the baseline is trained only by its own
    squared-error loss and must not shape the guide.
    """

    def __init__(self, input_size: int, rnn_hidden: int, hidden: Sequence[int], scalar: float) -> None:
        super().__init__()
        self.rnn = nn.LSTMCell(input_size, rnn_hidden)
        self.head = mlp([rnn_hidden, *hidden, 1])
        self.h_init = nn.Parameter(torch.zeros(1, rnn_hidden))
        self.c_init = nn.Parameter(torch.zeros(1, rnn_hidden))
        # Downstream costs include the dataset scale N/B (about 1e5-1e6); a multiplier lets a
        # small network output reach them.
        self.scalar = scalar

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.h_init.expand(batch_size, -1), self.c_init.expand(batch_size, -1)

    def forward(
        self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, c = self.rnn(inputs.detach(), state)
        return self.head(h).squeeze(-1) * self.scalar, (h, c)
