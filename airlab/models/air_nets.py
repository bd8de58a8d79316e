"""The neural networks inside AIR: the window decoder and encoder, the guide's per-step heads, and the
NVIL baseline. The probabilistic story that uses them is in ``air.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from airlab.compat.torch_internals import add_load_state_dict_pre_hook


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
        """Windows ``[N, w, w]`` from ``z_what`` ``[N, z_what_dim]``; in ``(0, 1)`` with ``sigmoid``."""
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
        """``(loc, scale)`` of ``q(z_what)``, each ``[N, z_what_dim]``, from windows ``[N, w, w]``."""
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
        """The presence probability and the ``(loc, scale)`` of ``q(z_where)`` (each ``[B, 3]``)."""
        features = self.trunk(h)
        z_pres_prob = torch.sigmoid(self.z_pres_head(features))
        where_loc, where_scale = self.z_where_head(features).chunk(2, -1)
        return z_pres_prob, where_loc, F.softplus(where_scale) + 1e-4


class ImageLSTMCell(nn.Module):
    """An LSTM cell whose input is an image, the same at every step, followed by a few per-step values.

    The image's share of the input-to-gate product (most of the cell's arithmetic: 2,500 of 2,554 input
    columns in AIR) is computed once per batch by ``project_image`` and reused by every ``step``. It is
    ``nn.LSTMCell`` on the concatenated input, with its initialisation and gate order. The input weight
    is held as two parameters, so that no step's backward pass builds a full-size gradient for a slice
    of it: ``image_to_gates`` ``[image_features, 4H]``, stored input-major so that its gradient is the
    product ``image.T @ grad`` that the BLAS runs fastest (1.5x faster than ``grad.T @ image`` at
    AIR's sizes, docs/benchmarks.md), and ``weight_ih_step`` ``[4H, step_features]`` as in
    ``nn.LSTMCell``. Checkpoints with ``nn.LSTMCell``'s single ``weight_ih``, or with the earlier
    ``weight_ih_image`` ``[4H, image_features]``, load unchanged.
    """

    def __init__(self, image_features: int, step_features: int, hidden_size: int) -> None:
        super().__init__()
        self.image_features, self.hidden_size = image_features, hidden_size
        self.image_to_gates = nn.Parameter(torch.empty(image_features, 4 * hidden_size))
        self.weight_ih_step = nn.Parameter(torch.empty(4 * hidden_size, step_features))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1 / hidden_size**0.5
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        add_load_state_dict_pre_hook(self, self._split_input_weight)

    def _split_input_weight(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
        weight = state_dict.pop(prefix + "weight_ih", None)
        if weight is not None:
            state_dict[prefix + "weight_ih_image"] = weight[:, : self.image_features]
            state_dict[prefix + "weight_ih_step"] = weight[:, self.image_features :]
        image_weight = state_dict.pop(prefix + "weight_ih_image", None)
        if image_weight is not None:
            state_dict[prefix + "image_to_gates"] = image_weight.t().contiguous()

    def project_image(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, image_features]`` -> the image's contribution to the gates, biases included ``[B, 4H]``."""
        return torch.addmm(self.bias_ih + self.bias_hh, image, self.image_to_gates)

    def step(
        self, image_gates: torch.Tensor, step_input: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on ``cat([image, step_input])``, given ``image_gates = project_image(image)``."""
        h, c = state
        gates = torch.addmm(image_gates, step_input, self.weight_ih_step.t())
        gates = torch.addmm(gates, h, self.weight_hh.t())
        in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, -1)  # nn.LSTMCell's order
        c = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
        return torch.sigmoid(out_gate) * torch.tanh(c), c


class NVILBaseline(nn.Module):
    """A separate recurrent network that predicts each step's downstream cost (Mnih & Gregor 2014).

    It reads the same inputs as the guide's LSTM, detached: the baseline is trained only by its own
    squared-error loss and must not shape the guide.
    """

    def __init__(
        self, image_features: int, step_features: int, rnn_hidden: int, hidden: Sequence[int], scalar: float
    ) -> None:
        super().__init__()
        self.rnn = ImageLSTMCell(image_features, step_features, rnn_hidden)
        self.head = mlp([rnn_hidden, *hidden, 1])
        self.h_init = nn.Parameter(torch.zeros(1, rnn_hidden))
        self.c_init = nn.Parameter(torch.zeros(1, rnn_hidden))
        # Downstream costs include the dataset scale N/B (about 1e5-1e6); a multiplier lets a
        # small network output reach them.
        self.scalar = scalar

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned initial ``(h, c)``, each expanded to ``[batch_size, rnn_hidden]``."""
        return self.h_init.expand(batch_size, -1), self.c_init.expand(batch_size, -1)

    def project_image(self, image: torch.Tensor) -> torch.Tensor:
        """The image's gate contribution ``[B, 4H]``, from the image detached from the guide."""
        return self.rnn.project_image(image.detach())

    def forward(
        self, image_gates: torch.Tensor, step_input: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One step: the predicted downstream cost ``[B]`` (times ``scalar``) and the new ``(h, c)``."""
        h, c = self.rnn.step(image_gates, step_input.detach(), state)
        return self.head(h).squeeze(-1) * self.scalar, (h, c)
