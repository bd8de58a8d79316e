"""The benchmark's reference for AIR: the algorithm of Pyro's AIR example, run as the example runs it.

Everything airlab's AIR does differently for speed is undone here, so that ``benchmark.py`` can time
both on the same machine, in the same process, on the same batches:

- the guide's LSTM (``nn.LSTMCell``) reads the whole concatenated input, image included, at every step,
  and so does the NVIL baseline's;
- the gradient is Pyro's ``TraceGraph_ELBO`` (downstream costs found by provenance tracking at run time);
- parameters live in Pyro's param store and ``pyro.optim.Adam`` (one unfused ``torch.optim.Adam`` per
  tensor) updates them, the baseline's at its own rate;
- the loop is a bare ``SVI.step``.

The model, guide and networks have the tutorial's sizes and priors (Eslami et al. 2016; Pyro's
``examples/air`` with the tutorial's flags), taken from the same config as airlab's run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, TraceGraph_ELBO
from torch import nn
from torch.nn import functional as F

from airlab.models.air_nets import mlp
from airlab.utils.spatial import image_to_window, window_to_image

#: In the param-store names of the baseline's modules and states: they train at ``baseline_lr``.
BASELINE_PREFIX = "bl_"


class ReferenceAIR(nn.Module):
    """AIR as Pyro's example writes it: one ``nn.LSTMCell`` over ``[image, z_where, z_what, z_pres]``."""

    def __init__(
        self,
        image_size: int,
        max_steps: int,
        z_what_dim: int,
        window_size: int,
        rnn_hidden: int,
        encoder_hidden: Sequence[int],
        decoder_hidden: Sequence[int],
        predict_hidden: Sequence[int],
        baseline_hidden: Sequence[int],
        decoder_output_bias: float,
        likelihood_sd: float,
        z_pres_prior: float,
        where_prior_loc: Sequence[float],
        where_prior_scale: Sequence[float],
    ) -> None:
        super().__init__()
        self.image_size, self.max_steps, self.window_size = image_size, max_steps, window_size
        self.z_what_dim, self.rnn_hidden = z_what_dim, rnn_hidden
        self.likelihood_sd, self.z_pres_prior = likelihood_sd, z_pres_prior
        self.decoder_output_bias = decoder_output_bias
        self.register_buffer("where_loc", torch.tensor(list(where_prior_loc)))
        self.register_buffer("where_scale", torch.tensor(list(where_prior_scale)))
        rnn_input = image_size**2 + 3 + z_what_dim + 1
        self.decode = mlp([z_what_dim, *decoder_hidden, window_size**2])
        self.encode = mlp([window_size**2, *encoder_hidden, 2 * z_what_dim])
        self.rnn = nn.LSTMCell(rnn_input, rnn_hidden)
        self.predict = mlp([rnn_hidden, *predict_hidden, 1 + 3 + 3])
        self.bl_rnn = nn.LSTMCell(rnn_input, rnn_hidden)
        self.bl_predict = mlp([rnn_hidden, *baseline_hidden, 1])

    def model(self, images: torch.Tensor) -> None:
        """Up to ``max_steps`` objects, each present only if the previous one was, added to a canvas."""
        pyro.module("decode", self.decode)
        batch = images.shape[0]
        with pyro.plate("data", batch):
            canvas = images.new_zeros(batch, self.image_size, self.image_size)
            z_pres = images.new_ones(batch, 1)
            for t in range(self.max_steps):
                z_pres = pyro.sample(f"z_pres_{t}", dist.Bernoulli(self.z_pres_prior * z_pres).to_event(1))
                mask = z_pres > 0  # [B, 1]: the later sites of an absent object are masked
                z_where = pyro.sample(
                    f"z_where_{t}",
                    dist.Normal(self.where_loc.expand(batch, 3), self.where_scale.expand(batch, 3))
                    .mask(mask)
                    .to_event(1),
                )
                z_what = pyro.sample(
                    f"z_what_{t}",
                    dist.Normal(images.new_zeros(batch, self.z_what_dim), 1.0).mask(mask).to_event(1),
                )
                window = torch.sigmoid(self.decode(z_what) + self.decoder_output_bias)
                window = window.view(batch, self.window_size, self.window_size)
                canvas = canvas + window_to_image(window, z_where, self.image_size) * z_pres.view(-1, 1, 1)
            pyro.sample(
                "obs",
                dist.Normal(canvas.view(batch, -1), self.likelihood_sd).to_event(1),
                obs=images.view(batch, -1),
            )

    def guide(self, images: torch.Tensor) -> None:
        """Per step: the LSTM on the image and the previous latents, then z_pres (with the NVIL baseline's
        value), z_where, and z_what from the window cropped at z_where."""
        for name in ("rnn", "predict", "encode", "bl_rnn", "bl_predict"):
            pyro.module(name, getattr(self, name))
        batch = images.shape[0]
        flat = images.view(batch, -1)
        squares = images.view(batch, self.image_size, self.image_size)
        h0 = pyro.param("h_init", torch.zeros(1, self.rnn_hidden))
        c0 = pyro.param("c_init", torch.zeros(1, self.rnn_hidden))
        z_where = pyro.param("z_where_init", torch.zeros(1, 3)).expand(batch, -1)
        z_what = pyro.param("z_what_init", torch.zeros(1, self.z_what_dim)).expand(batch, -1)
        bl_h0 = pyro.param("bl_h_init", torch.zeros(1, self.rnn_hidden))
        bl_c0 = pyro.param("bl_c_init", torch.zeros(1, self.rnn_hidden))
        h, c = h0.expand(batch, -1), c0.expand(batch, -1)
        bl_h, bl_c = bl_h0.expand(batch, -1), bl_c0.expand(batch, -1)
        z_pres = flat.new_ones(batch, 1)
        with pyro.plate("data", batch):
            for t in range(self.max_steps):
                rnn_input = torch.cat([flat, z_where, z_what, z_pres], -1)
                h, c = self.rnn(rnn_input, (h, c))
                out = self.predict(h)
                z_pres_prob = torch.sigmoid(out[:, :1])
                where_loc, where_scale = out[:, 1:4], F.softplus(out[:, 4:]) + 1e-4
                # The baseline sees the same input, detached: it must not shape the guide.
                bl_h, bl_c = self.bl_rnn(rnn_input.detach(), (bl_h, bl_c))
                baseline = self.bl_predict(bl_h).squeeze(-1) * z_pres.squeeze(-1).detach()
                z_pres = pyro.sample(
                    f"z_pres_{t}",
                    dist.Bernoulli(z_pres_prob * z_pres).to_event(1),
                    infer={"baseline": {"baseline_value": baseline}},
                )
                mask = z_pres > 0  # [B, 1]: the later sites of an absent object are masked
                z_where = pyro.sample(
                    f"z_where_{t}",
                    dist.Normal(self.where_loc + self.where_scale * where_loc, self.where_scale * where_scale)
                    .mask(mask)
                    .to_event(1),
                )
                window = image_to_window(squares, z_where, self.window_size)
                what_loc, what_scale = self.encode(window.flatten(1)).chunk(2, -1)
                z_what = pyro.sample(
                    f"z_what_{t}",
                    dist.Normal(what_loc, F.softplus(what_scale) + 1e-4).mask(mask).to_event(1),
                )


def reference_from_config(model_cfg: Any, image_size: int) -> ReferenceAIR:
    """The reference network with the sizes and priors of an ``model=air`` config node."""
    return ReferenceAIR(
        image_size=image_size,
        max_steps=int(model_cfg.max_steps),
        z_what_dim=int(model_cfg.z_what_dim),
        window_size=int(model_cfg.window_size),
        rnn_hidden=int(model_cfg.rnn_hidden),
        encoder_hidden=list(model_cfg.encoder_hidden),
        decoder_hidden=list(model_cfg.decoder_hidden),
        predict_hidden=list(model_cfg.predict_hidden),
        baseline_hidden=list(model_cfg.baseline_hidden),
        decoder_output_bias=float(model_cfg.decoder_output_bias),
        likelihood_sd=float(model_cfg.likelihood_sd),
        z_pres_prior=float(model_cfg.z_pres_prior),
        where_prior_loc=[model_cfg.scale_prior_mean, model_cfg.pos_prior_mean, model_cfg.pos_prior_mean],
        where_prior_scale=[model_cfg.scale_prior_sd, model_cfg.pos_prior_sd, model_cfg.pos_prior_sd],
    )


def reference_svi(
    reference: ReferenceAIR, num_train: int, batch_size: int, lr: float, baseline_lr: float
) -> SVI:
    """``SVI`` with ``TraceGraph_ELBO`` and ``pyro.optim.Adam``, the data plate scaled by N/B."""

    def per_param(param_name: str) -> dict[str, float]:
        # the example's own rule: the baseline's parameters are the ones whose names say so
        return {"lr": baseline_lr if BASELINE_PREFIX in param_name else lr}

    scale = num_train / batch_size
    return SVI(
        poutine.scale(reference.model, scale),
        poutine.scale(reference.guide, scale),
        pyro.optim.Adam(per_param),
        TraceGraph_ELBO(),
    )


def time_reference_steps(svi: SVI, batches: Sequence[torch.Tensor], steps: int) -> float:
    """Seconds for ``steps`` bare ``svi.step`` calls cycling over ``batches``."""
    started = time.perf_counter()
    for i in range(steps):
        svi.step(batches[i % len(batches)])
    return time.perf_counter() - started
