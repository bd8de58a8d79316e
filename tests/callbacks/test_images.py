"""The picture callback: reconstructions and prior samples, as the model declares them."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from airlab.callbacks.images import ReconstructionLogger
from airlab.models.air import AIR
from airlab.models.vae import VAE


class Recorder:
    def __init__(self) -> None:
        self.images: dict[str, torch.Tensor] = {}
        self.figures: dict[str, object] = {}

    def add_image(self, tag, image, step=0):
        self.images[tag] = image

    def add_figure(self, tag, figure, step=0):
        self.figures[tag] = figure


def module(model):
    return SimpleNamespace(model=model, device=torch.device("cpu"))


def test_air_samples_are_one_labelled_figure_with_a_row_per_count():
    torch.manual_seed(0)
    air = AIR(image_shape=(1, 20, 20), max_steps=2, z_what_dim=4, window_size=8, rnn_hidden=8).eval()
    writer = Recorder()
    batch = {"image": torch.rand(4, 1, 20, 20), "count": torch.zeros(4)}
    ReconstructionLogger(num_images=4).log_images([writer], batch, module(air), step=3)
    figure = writer.figures["val/samples"]
    labels = [ax.get_ylabel() for ax in figure.axes]
    assert labels == ["0 objects", "1 object", "2 objects"]
    assert "val/reconstructions" in writer.images and "val/samples" not in writer.images


def test_vae_samples_stay_one_grid():
    torch.manual_seed(0)
    vae = VAE(image_shape=(1, 28, 28), z_dim=2, hidden_dim=8).eval()
    writer = Recorder()
    ReconstructionLogger(num_images=4).log_images(
        [writer], {"image": torch.rand(4, 1, 28, 28)}, module(vae), 0
    )
    assert writer.images["val/samples"].shape[0] == 3 and writer.figures == {}
