"""What the training glue needs from a model.

A ``GenerativeModel`` is an ``nn.Module`` that owns every learnable parameter (registered with
``pyro.module`` inside ``model``/``guide``), so Lightning's optimizer, checkpoints and DDP see them.

A model also *declares* what it is (the class attributes and ``uses_decaying_avg_baseline`` below):
estimators, callbacks and tasks read these declarations instead of guessing the model kind from its
``_target_`` string or probing for methods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from airlab.contracts.options import ChecksOptions
from airlab.errors import ConfigError

if TYPE_CHECKING:
    from pyro.poutine.trace_struct import Trace

#: What a guide's variance-reduction baseline is: none, Pyro's decaying average of the downstream cost
#: (its running mean lives in Pyro's param store), or a network trained beside the guide (NVIL).
BaselineKind = Literal["none", "decaying_avg", "learned"]


class GenerativeModel(ChecksOptions, nn.Module):
    """Base class of airlab's models: the Pyro ``model``/``guide`` pair plus declared capabilities.

    The contract (``docs/your_model.md``):

    * ``model(*inputs)`` and ``guide(*inputs)`` are the only methods a model must write. They receive the
      batch's tensors named by :attr:`inputs`, in that order (``("image",)`` unless declared).
    * The constructor may ask for ``data_shape`` (one item's shape of the first input, e.g. ``(20,)``
      for vectors) or ``image_shape`` (the same, for image models): the builder fills whichever it takes.
    * Every sample site sits inside a plate named ``data`` over the batch (``pyro.plate("data", B)``): the
      dataset scale N/B, evaluation's per-datum bounds and the particle tiling rely on it.
    * Every learnable ``nn.Module`` is an attribute of the model and is registered with ``pyro.module``
      inside ``model``/``guide``, so that Lightning's optimizer, checkpoints and DDP see it.
    * Everything else is a declared capability (the class attributes below): a callback or task that
      needs ``reconstruct``, ``sample``, ``encode``/``decode`` or ``infer`` runs only for models that
      declare it, and an estimator that needs something (reparameterised sites, enumerable
      configurations) is refused at start-up for a model that does not declare it.
    """

    #: The batch keys passed, in this order, to ``model`` and ``guide`` (and to every estimator, the
    #: evaluation and the variance monitor): ``("image", "label")`` for a conditional or semi-supervised
    #: model. Checked against the data's keys at start-up.
    inputs: tuple[str, ...] = ("image",)
    #: True when the guide has sample sites without ``rsample`` (score-function gradients).
    has_discrete_latents: bool = False
    #: The model and guide can run ``num_particles`` as an extra leading batch dimension.
    supports_vectorized_particles: bool = True
    #: ``discrete_configurations()`` lists every configuration of the discrete latents with non-zero
    #: probability, so ``elbo=enum_counts`` can sum them out (AIR: the T + 1 object counts).
    has_enumerable_discrete_latents: bool = False
    #: The most plates any sample site sits in (Pyro's ``max_plate_nesting``); ``elbo=trace_enum`` uses
    #: it unless ``elbo.max_plate_nesting`` is set, and Pyro guesses it when neither says.
    max_plate_nesting: int | None = None
    #: ``reconstruct(*inputs)`` returns one decoded posterior draw per item, shaped as the first input:
    #: the reconstruction pictures apply.
    can_reconstruct: bool = False
    #: ``sample(n)`` returns ``n`` items decoded from prior draws: the prior-sample pictures apply.
    can_sample: bool = False
    #: ``infer(images)`` returns per-image object counts, boxes and windows (AIR): count metrics and
    #: the attention pictures apply.
    has_object_counts: bool = False
    #: ``encode(images)`` gives posterior means ``[B, z]`` and ``decode(z)`` images (the VAE): the latent
    #: t-SNE, traversal and interpolation pictures apply.
    has_latent_space: bool = False
    #: Pyro's own ``SVI`` + ``Trace_ELBO`` loop can train this model as is, so the benchmark times that
    #: bare loop beside airlab's for the same model (the VAE of Pyro's example).
    supports_bare_trace_loop: bool = False
    #: ``initialise_from_data(*inputs)`` sets the starting parameters from the training items (all of
    #: them for airlab's in-memory data, else the first training batch); the builder calls it once.
    initialises_from_data: bool = False
    #: Multiply log-densities by N/B (a subsampled data plate) during training.
    scale_to_dataset: bool = False
    #: The metrics of :meth:`evaluate` (logged as ``val/<name>``, ``test/<name>``) that the progress bar,
    #: the plain progress lines and ``curves`` show beside the ELBO, most important first.
    headline_metrics: tuple[str, ...] = ()
    #: The model's own TensorBoard custom-scalar charts: title -> tag patterns (regular expressions),
    #: shown in a group named after the model beside airlab's ELBO and gradient-variance groups.
    scalar_charts: Mapping[str, Sequence[str]] = {}
    #: Batch keys beside :attr:`inputs` that the model's metrics need (e.g. AIR's ``count``).
    required_annotations: tuple[str, ...] = ()

    #: The option (constructor keyword) that picks the guide's variance-reduction baseline, and the kind
    #: of baseline each of its values asks for (values not listed: none). The config validator reads
    #: them to refuse an estimator that cannot update, or would not use, that baseline.
    baseline_option: str | None = None
    baseline_kinds: Mapping[str, BaselineKind] = {}

    @classmethod
    def baseline_kind(cls, options: Mapping[str, Any]) -> BaselineKind:
        """The baseline the guide asks for under the model's options (constructor keywords, defaults
        filled in); the validator calls it on the class, before anything is built."""
        if cls.baseline_option is None:
            return "none"
        return cls.baseline_kinds.get(options.get(cls.baseline_option), "none")

    @classmethod
    def required_keys(cls) -> tuple[str, ...]:
        """Every batch key the model reads: its inputs, then the annotations its metrics need."""
        return (*cls.inputs, *(k for k in cls.required_annotations if k not in cls.inputs))

    @classmethod
    def check_data_keys(cls, keys: Sequence[str], data_name: str) -> None:
        """Refuse, in one line naming the first missing key, data whose batches lack a key the model reads."""
        missing = [k for k in cls.required_keys() if k not in keys]
        if missing:
            raise ConfigError(
                "data",
                f"model={cls.__name__.lower()} reads batch key {missing[0]!r}, which {data_name} does not "
                f"provide (its batches have: {', '.join(keys)}); choose data that has it",
            )

    def batch_inputs(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The tensors ``model`` and ``guide`` take from a batch dict: ``batch[k]`` for each of ``inputs``."""
        return tuple(batch[key] for key in self.inputs)

    def model(self, *inputs: torch.Tensor) -> None:
        """The generative story for a batch: the tensors named by :attr:`inputs` (``[B, C, H, W]`` images
        by default)."""
        raise NotImplementedError

    def guide(self, *inputs: torch.Tensor) -> None:
        """The amortised posterior for the same batch."""
        raise NotImplementedError

    def initialise_from_data(self, *inputs: torch.Tensor) -> None:
        """Data-dependent initialisation from the training items' tensors named by :attr:`inputs`;
        models that declare ``initialises_from_data`` implement it."""
        raise NotImplementedError

    def reconstruct(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Decode a posterior draw (or mean) of each item, shaped as the first input; models that declare
        ``can_reconstruct`` implement it."""
        raise NotImplementedError

    def sample(self, num_samples: int) -> torch.Tensor:
        """Items decoded from prior draws, ``[num_samples, *data_shape]``; models that declare
        ``can_sample`` implement it."""
        raise NotImplementedError

    def sample_rows(self, per_row: int) -> dict[str, torch.Tensor]:
        """Prior draws for the ``val/samples`` picture, in labelled rows of ``per_row`` items: one row of
        :meth:`sample` unless the model fixes a discrete choice per row (AIR: 0, 1, 2, ... objects), so
        that the picture shows what the decoder has learned even where the prior rarely makes it."""
        return {"prior": self.sample(per_row)}

    def uses_decaying_avg_baseline(self) -> bool:
        """Whether the guide asks TraceGraph for Pyro's decaying-average baseline, whose running mean
        lives in Pyro's param store (so a compiled estimator cannot update it)."""
        return False

    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image objects (``count``, boxes, windows, ``reconstruction``); models that declare
        ``has_object_counts`` implement it."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Posterior means ``[B, z]``; models that declare ``has_latent_space`` implement it."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` from latents ``[B, z]``; models that declare ``has_latent_space``
        implement it."""
        raise NotImplementedError

    def discrete_configurations(self) -> dict[str, torch.Tensor] | None:
        """The discrete sites' values in every configuration with non-zero probability: site name ->
        ``[C, *event_shape]`` (row c of every site is configuration c); None when the model declares none."""
        return None

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
        biases the gradient); ``tests/models/test_air_fast_step.py`` shows how to check one against Pyro.
        """
        return None

    def training_metrics(self, guide_trace: Trace) -> dict[str, torch.Tensor]:
        """Extra per-step metrics read off the guide trace, logged under ``train/``."""
        return {}

    def on_train_step(self, global_step: int) -> None:
        """Called before each training step, e.g. to anneal a prior."""
