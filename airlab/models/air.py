"""Attend-Infer-Repeat (Eslami et al. 2016) on MultiMNIST.

The story: an image holds some number of objects, at most ``max_steps``. Step by step, a Bernoulli
``z_pres_t`` says whether one more object is present (only if the previous one was); a present
object has a "where" ``z_where_t = (scale, x, y)`` and a "what" ``z_what_t``, decoded to a window that
the spatial transformer adds to the canvas. The pixels are Normal around the canvas.

The guide runs an LSTM over the image and the previous step's latents, proposes ``z_pres_t`` and
``z_where_t`` (relative to the prior), crops the window at ``z_where_t`` and encodes it to ``z_what_t``.
Every step runs for every image; sites after the first absent object are masked, so the structure is
static (and traceable by the Jit estimators) while each image has its own number of objects.

``z_pres`` has no reparameterisation, so its gradient is a score-function term. TraceGraph keeps only
the costs downstream of each ``z_pres_t``, and subtracts a baseline when ``baseline`` asks for one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.provenance import detach_provenance
from torch import nn

from airlab.contracts.model import GenerativeModel
from airlab.contracts.options import UNITS, OneOf, Range
from airlab.evaluation.counts import count_accuracy
from airlab.models.air_nets import ImageLSTMCell, NVILBaseline, StepPredictor, WindowDecoder, WindowEncoder
from airlab.utils.spatial import image_to_window, window_to_image

if TYPE_CHECKING:
    from pyro.poutine.trace_struct import Trace

#: The NVIL baseline network's image gates and its recurrent ``(h, c)``.
BaselineState = tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

PRIOR_TYPES = ("bernoulli", "geometric")
ANNEALING = ("none", "linear", "exp")
BASELINES = ("none", "decaying_avg", "nvil")
STEP_SITES = ("z_pres", "z_where", "z_what")  # the sample sites of one step, model and guide alike


class AIR(GenerativeModel):
    """Attend-Infer-Repeat (Eslami et al. 2016): up to ``max_steps`` objects, each with ``z_pres``,
    ``z_where`` and ``z_what``, drawn onto one canvas; the guide proposes them step by step with an LSTM."""

    has_discrete_latents = True
    supports_vectorized_particles = False  # the guide's recursion runs over a [B, ...] batch
    baseline_option = "baseline"
    baseline_kinds = {"nvil": "learned", "decaying_avg": "decaying_avg"}
    has_object_counts = True
    can_reconstruct = True
    can_sample = True
    max_plate_nesting = 1
    has_enumerable_discrete_latents = True  # n present objects, then none: max_steps + 1 counts
    required_annotations = ("count",)
    headline_metrics = ("count_accuracy",)
    scalar_charts = {
        "count accuracy": (r"val/count_accuracy", r"test/count_accuracy"),
        "z_pres probability": (r"train/z_pres_prob/.*",),
    }

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 50, 50),
        max_steps: Annotated[int, Range(ge=1)] = 3,
        z_what_dim: Annotated[int, UNITS] = 50,
        window_size: Annotated[int, Range(ge=2, le=1024)] = 28,
        rnn_hidden: Annotated[int, UNITS] = 256,
        encoder_hidden: Annotated[Sequence[int], UNITS] = (200,),
        decoder_hidden: Annotated[Sequence[int], UNITS] = (200,),
        predict_hidden: Annotated[Sequence[int], UNITS] = (200,),
        decoder_sigmoid: bool = True,
        decoder_output_bias: float = -2.0,
        likelihood_sd: Annotated[float, Range(gt=0)] = 0.3,
        scale_prior_mean: Annotated[float, Range(gt=0)] = 3.0,
        scale_prior_sd: Annotated[float, Range(gt=0)] = 0.1,
        pos_prior_mean: float = 0.0,
        pos_prior_sd: Annotated[float, Range(gt=0)] = 1.0,
        z_pres_prior: Annotated[float, Range(gt=0, lt=1)] = 0.01,
        z_pres_prior_type: Annotated[str, OneOf(PRIOR_TYPES)] = "bernoulli",
        z_pres_anneal: Annotated[str, OneOf(ANNEALING)] = "none",
        anneal_begin: Annotated[int, Range(ge=0)] = 0,
        anneal_duration: Annotated[int, Range(ge=1)] = 100_000,
        anneal_target: Annotated[float, Range(gt=0, lt=1)] = 1e-5,
        baseline: Annotated[str, OneOf(BASELINES)] = "nvil",
        baseline_beta: Annotated[float, Range(ge=0, lt=1)] = 0.9,
        baseline_scalar: Annotated[float, Range(gt=0)] = 1.0,
        baseline_rnn_hidden: Annotated[int, UNITS] = 256,
        baseline_hidden: Annotated[Sequence[int], UNITS] = (200,),
        scale_to_dataset: bool = True,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or image_shape[0] != 1 or image_shape[1] != image_shape[2]:
            raise ValueError(f"AIR needs square single-channel images, got {tuple(image_shape)}")
        self.image_shape = tuple(image_shape)
        self.image_size = image_shape[-1]
        self.max_steps = max_steps
        self.z_what_dim = z_what_dim
        self.window_size = window_size
        self.likelihood_sd = likelihood_sd
        self.scale_to_dataset = scale_to_dataset
        self.z_pres_prior_type = z_pres_prior_type
        self.z_pres_prior = z_pres_prior
        self.z_pres_anneal = z_pres_anneal
        self.anneal_begin, self.anneal_duration, self.anneal_target = (
            anneal_begin,
            anneal_duration,
            anneal_target,
        )
        self.baseline = baseline
        self.baseline_beta = baseline_beta
        # P(one more object | the previous one was present) now (annealed); a buffer so that checkpoints
        # carry it. The same quantity for both prior types, and the one anneal_target names.
        self.register_buffer("z_pres_prior_now", torch.tensor(self.initial_presence_prob()))
        self.register_buffer(
            "where_prior_loc", torch.tensor([scale_prior_mean, pos_prior_mean, pos_prior_mean])
        )
        self.register_buffer("where_prior_scale", torch.tensor([scale_prior_sd, pos_prior_sd, pos_prior_sd]))

        self.decoder = WindowDecoder(
            z_what_dim, decoder_hidden, window_size, decoder_sigmoid, decoder_output_bias
        )
        # The guide's LSTM reads the image and the previous step's z_where, z_what and z_pres.
        step_input = 3 + z_what_dim + 1
        self.rnn = ImageLSTMCell(self.image_size**2, step_input, rnn_hidden)
        self.predict = StepPredictor(rnn_hidden, predict_hidden)
        self.encoder = WindowEncoder(window_size, encoder_hidden, z_what_dim)
        self.guide_init = nn.ParameterDict(
            {
                "h": nn.Parameter(torch.zeros(1, rnn_hidden)),
                "c": nn.Parameter(torch.zeros(1, rnn_hidden)),
                "z_where": nn.Parameter(torch.zeros(1, 3)),
                "z_what": nn.Parameter(torch.zeros(1, z_what_dim)),
            }
        )
        self.baseline_net = (
            NVILBaseline(
                self.image_size**2, step_input, baseline_rnn_hidden, baseline_hidden, baseline_scalar
            )
            if baseline == "nvil"
            else None
        )

    # -- the prior on the number of objects -------------------------------------------------------
    def initial_presence_prob(self) -> float:
        """P(one more object) before annealing: ``z_pres_prior`` itself (``bernoulli``), or one minus the
        Geometric count's stop probability (``geometric``)."""
        prior = float(self.z_pres_prior)
        return prior if self.z_pres_prior_type == "bernoulli" else 1.0 - prior

    def presence_prob(self) -> torch.Tensor:
        """P(object t present | object t-1 present) under the current (annealed) prior."""
        return self.z_pres_prior_now

    def annealed_prior(self, step: int) -> float:
        """The presence probability at ``step``, moved from its initial value towards ``anneal_target``.

        ``anneal_target`` is a presence probability for both prior types, so the default 1e-5 drives
        the prior towards fewer objects whatever ``z_pres_prior_type`` says, as in the AIR paper."""
        start, target = self.initial_presence_prob(), self.anneal_target
        if self.z_pres_anneal == "none" or step <= self.anneal_begin:
            return start
        progress = min(1.0, (step - self.anneal_begin) / max(self.anneal_duration, 1))
        if self.z_pres_anneal == "linear":
            return start + (target - start) * progress
        return math.exp(math.log(start) + (math.log(target) - math.log(start)) * progress)

    def on_train_step(self, global_step: int) -> None:
        """Set the presence prior to its annealed value for ``global_step``."""
        self.z_pres_prior_now.fill_(self.annealed_prior(global_step))

    # -- the generative story -----------------------------------------------------------------------
    def model(self, images: torch.Tensor) -> None:
        """``p(x, z)``: up to ``max_steps`` objects drawn onto a canvas; ``images`` observed as ``obs``."""
        pyro.module("decoder", self.decoder)
        batch = images.shape[0]
        pixels = images.reshape(batch, -1)
        presence = self.presence_prob()
        with pyro.plate("data", batch):
            z_pres = pixels.new_ones(batch, 1)
            # Every object draws its pose and appearance from the same priors.
            where_prior = dist.Normal(self.where_prior_loc, self.where_prior_scale).expand([batch, 3])
            what_prior = dist.Normal(pixels.new_zeros(()), 1.0).expand([batch, self.z_what_dim])
            steps = []
            for t in range(self.max_steps):
                # z_pres_t: [B, 1]; one more object only if the previous one was there
                z_pres = pyro.sample(f"z_pres_{t}", dist.Bernoulli(presence * z_pres).to_event(1))
                present = z_pres.squeeze(-1) > 0
                z_where = pyro.sample(f"z_where_{t}", where_prior.to_event(1).mask(present))  # [B, 3]
                z_what = pyro.sample(f"z_what_{t}", what_prior.to_event(1).mask(present))  # [B, z_what]
                steps.append((z_pres, z_where, z_what))
            # Objects add up, with no occlusion; the T windows are decoded and placed in one call each.
            z_pres, z_where, z_what = (torch.stack(latents, 1) for latents in zip(*steps, strict=True))
            canvas = self.render(z_pres.squeeze(-1), z_where, z_what)[1].sum(1)  # [B, H, W]
            # obs: [B, H*W]
            pyro.sample(
                "obs", dist.Normal(canvas.view(batch, -1), self.likelihood_sd).to_event(1), obs=pixels
            )

    def render(
        self, z_pres: torch.Tensor, z_where: torch.Tensor, z_what: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each step's window decoded from ``z_what`` ``[B, T, z_what]`` times ``z_pres`` ``[B, T]``,
        ``[B, T, w, w]``, and placed at ``z_where`` ``[B, T, 3]`` on its own canvas, ``[B, T, H, W]``."""
        batch, steps = z_pres.shape
        windows = self.decoder(z_what.flatten(0, 1)) * z_pres.reshape(-1, 1, 1)  # [B*T, w, w]
        placed = window_to_image(windows, z_where.flatten(0, 1), self.image_size)
        return (
            windows.view(batch, steps, self.window_size, self.window_size),
            placed.view(batch, steps, self.image_size, self.image_size),
        )

    def guide(self, images: torch.Tensor) -> None:
        """``q(z | x)``: ``z_pres_t``, ``z_where_t`` and ``z_what_t`` per step from the LSTM state; with NVIL,
        also each step's baseline value."""
        pyro.module("rnn", self.rnn)
        pyro.module("predict", self.predict)
        pyro.module("encoder", self.encoder)
        pyro.module("guide_init", self.guide_init)
        if self.baseline_net is not None:
            pyro.module("baseline", self.baseline_net)
        batch = images.shape[0]
        flat = images.reshape(batch, -1)
        squares = images.reshape(batch, self.image_size, self.image_size)
        with pyro.plate("data", batch):
            state = (self.guide_init["h"].expand(batch, -1), self.guide_init["c"].expand(batch, -1))
            z_where = self.guide_init["z_where"].expand(batch, -1)
            z_what = self.guide_init["z_what"].expand(batch, -1)
            z_pres = flat.new_ones(batch, 1)
            # The image is the same at every step: its share of the LSTM's input product is computed once.
            image_gates = self.rnn.project_image(flat)  # [B, 4 * rnn_hidden]
            baseline_state = None
            if self.baseline == "nvil" and self.training:  # pictures and validation need no baseline
                baseline_state = (
                    self.baseline_net.project_image(flat),
                    self.baseline_net.initial_state(batch),
                )
            for t in range(self.max_steps):
                step_input = torch.cat([z_where, z_what, z_pres], -1)
                state = self.rnn.step(image_gates, step_input, state)
                z_pres_prob, where_loc, where_scale = self.predict(state[0])

                infer, baseline_state = self._baseline_infer(step_input, baseline_state, z_pres)
                z_pres = pyro.sample(
                    f"z_pres_{t}", dist.Bernoulli(z_pres_prob * z_pres).to_event(1), infer=infer
                )
                present = z_pres.squeeze(-1) > 0

                # Proposals are offsets from the prior, in units of its spread.
                loc = self.where_prior_loc + self.where_prior_scale * where_loc
                scale = self.where_prior_scale * where_scale
                z_where = pyro.sample(f"z_where_{t}", dist.Normal(loc, scale).to_event(1).mask(present))

                window = image_to_window(squares, z_where, self.window_size)
                what_loc, what_scale = self.encoder(window)
                z_what = pyro.sample(
                    f"z_what_{t}", dist.Normal(what_loc, what_scale).to_event(1).mask(present)
                )

    def _baseline_infer(
        self,
        step_input: torch.Tensor,
        baseline_state: BaselineState | None,
        z_pres_prev: torch.Tensor,
    ) -> tuple[dict[str, Any], BaselineState | None]:
        """The ``infer`` options of ``z_pres_t`` for TraceGraph's variance reduction.

        ``baseline_state`` (NVIL, in training only): the baseline network's image gates and its
        recurrent state.
        """
        if self.baseline == "decaying_avg":
            return {
                "baseline": {"use_decaying_avg_baseline": True, "baseline_beta": self.baseline_beta}
            }, None
        if baseline_state is not None:
            image_gates, state = baseline_state
            value, state = self.baseline_net(image_gates, step_input, state)
            # Once an object is absent the later z_pres are certain; their baseline is switched off.
            infer = {"baseline": {"baseline_value": value * z_pres_prev.detach().squeeze(-1)}}
            return infer, (image_gates, state)
        return {}, None

    # -- inference and pictures -------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """One draw from the guide: ``z_pres`` [B, T], ``z_where`` [B, T, 3], ``count`` [B],
        ``windows`` [B, T, w, w] (decoded, masked) and the ``reconstruction`` [B, 1, H, W]."""
        trace = pyro.poutine.trace(pyro.poutine.block(self.guide, hide_types=["param"])).get_trace(images)
        steps = range(self.max_steps)
        z_pres = torch.cat([trace.nodes[f"z_pres_{t}"]["value"] for t in steps], -1)
        z_where = torch.stack([trace.nodes[f"z_where_{t}"]["value"] for t in steps], 1)
        z_what = torch.stack([trace.nodes[f"z_what_{t}"]["value"] for t in steps], 1)
        windows, placed = self.render(z_pres, z_where, z_what)
        reconstruction = placed.sum(1)
        return {
            "z_pres": z_pres,
            "z_where": z_where,
            "count": z_pres.sum(-1).long(),
            "windows": windows,
            "reconstruction": reconstruction.unsqueeze(1),
        }

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstructions ``[B, 1, H, W]`` from one guide draw per image."""
        return self.infer(images)["reconstruction"]

    @torch.no_grad()
    def sample(self, num_samples: int, presence: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Canvases drawn from the prior (the mean image, without pixel noise); ``presence`` fixes
        ``z_pres_<t>`` sites (``[num_samples, 1]`` each) to draw a chosen number of objects."""
        model = pyro.poutine.condition(self.model, data=presence) if presence else self.model
        trace = pyro.poutine.trace(pyro.poutine.block(model, hide_types=["param"])).get_trace(
            self.where_prior_loc.new_zeros(num_samples, *self.image_shape)
        )
        return trace.nodes["obs"]["fn"].base_dist.loc.view(num_samples, *self.image_shape).clamp(0, 1)

    def sample_rows(self, per_row: int) -> dict[str, torch.Tensor]:
        """A row of canvases with exactly n objects for each n = 0..max_steps: under a small
        ``z_pres_prior`` the prior alone draws empty canvases, which say nothing of the decoder."""
        ones = self.where_prior_loc.new_ones(per_row, 1)
        rows = {}
        for count in range(self.max_steps + 1):
            presence = {f"z_pres_{t}": ones if t < count else ones * 0 for t in range(self.max_steps)}
            rows[f"{count} object{'' if count == 1 else 's'}"] = self.sample(per_row, presence)
        return rows

    # -- what the training glue and monitors read ------------------------------------------------
    def uses_decaying_avg_baseline(self) -> bool:
        """Whether ``z_pres`` uses Pyro's decaying-average baseline (its state lives in the param store)."""
        return self.baseline == "decaying_avg"

    def baseline_parameters(self) -> Iterator[nn.Parameter]:
        """The NVIL baseline network's parameters (none without it): trained at ``optim.baseline_lr``."""
        return iter(self.baseline_net.parameters()) if self.baseline_net is not None else iter(())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by group (guide heads, RNN, encoder, decoder, baseline) for variance reports."""
        groups = {
            "guide/z_pres": list(self.predict.z_pres_head.parameters()),
            "guide/z_where": list(self.predict.z_where_head.parameters()),
            "guide/z_what": list(self.encoder.parameters()),
            "guide/rnn": [
                *self.rnn.parameters(),
                *self.predict.trunk.parameters(),
                *self.guide_init.parameters(),
            ],
            "model/decoder": list(self.decoder.parameters()),
        }
        if self.baseline_net is not None:
            groups["baseline"] = list(self.baseline_net.parameters())
        return groups

    def discrete_configurations(self) -> dict[str, torch.Tensor]:
        """``z_pres`` has ``max_steps + 1`` configurations of non-zero probability, one per count n:
        steps ``< n`` present, the rest absent (an absent object is never followed by a present one)."""
        counts = torch.arange(self.max_steps + 1)
        dtype = self.where_prior_loc.dtype
        return {f"z_pres_{t}": (counts > t).to(dtype).unsqueeze(-1) for t in range(self.max_steps)}

    def score_dependencies(self) -> dict[str, list[str]]:
        """``z_pres_t`` gates every later step (the guide's LSTM reads it; absent objects mask every
        later site) and the canvas, so its downstream cost, for one image, is every log-density term
        of steps >= t plus ``obs``. Earlier steps do not depend on it."""
        later = {
            t: [f"{site}_{s}" for s in range(t, self.max_steps) for site in STEP_SITES]
            for t in range(self.max_steps)
        }
        return {f"z_pres_{t}": [*later[t], "obs"] for t in range(self.max_steps)}

    def training_metrics(self, guide_trace: Trace) -> dict[str, torch.Tensor]:
        """Mean proposal probability that object t is present, per step."""
        metrics = {}
        for t in range(self.max_steps):
            fn = guide_trace.nodes[f"z_pres_{t}"]["fn"]
            metrics[f"z_pres_prob/step_{t}"] = detach_provenance(fn.base_dist.probs).detach().mean()
        return metrics

    def evaluate(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``count_accuracy`` of one guide draw per image; inferred and true counts ``[B]`` for callbacks."""
        inferred = self.infer(batch["image"])
        return {"count_accuracy": count_accuracy(inferred["count"], batch["count"])}, {
            "inferred_count": inferred["count"],
            "true_count": batch["count"],
        }
