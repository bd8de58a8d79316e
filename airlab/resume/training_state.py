"""What an airlab checkpoint holds beyond Lightning's own entries, and how the SVI module gets it back.

Lightning saves the module's weights, the optimizer, the loops and the training loader's position
(:mod:`airlab.resume.loader`). :class:`TrainingState` adds, under its own keys: the estimator state in
Pyro's param store that is no module parameter (decaying-average baselines), the run's resolved config,
the non-finite guard's counters, every random generator (:mod:`airlab.resume.rng`) and the training-set
size; and it fixes the loop state of a run that stopped at its budget, so that it resumes as an
uninterrupted run continues. All of it is tensors and plain data: the file loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import Any

import pyro
import pytorch_lightning as pl
import torch

from airlab.compat.lightning_internals import reopen_stopped_epoch
from airlab.estimators.nonfinite import NonFiniteGuard
from airlab.resume.rng import rng_state, set_rng_state

PARAM_STORE_KEY = "pyro_param_store"
CONFIG_KEY = "airlab_config"
NONFINITE_KEY = "airlab_nonfinite"
RNG_KEY = "airlab_rng"
NUM_TRAIN_KEY = "airlab_num_train"


class TrainingState:
    """The SVI module's side of a checkpoint: saved by :meth:`save`, held by :meth:`load` until training
    starts, applied by :meth:`restore` on the module's device. Between :meth:`hold_generators` and
    :meth:`release_generators` (a validation) the generators are put back where training left them."""

    def __init__(self, guard: NonFiniteGuard) -> None:
        self.guard = guard
        self.pending_param_store: dict[str, torch.Tensor] = {}
        self.pending_rng: dict[str, Any] | None = None  # a checkpoint's generators, until training starts
        self.rng_before_validation: dict[str, Any] | None = None

    def save(
        self,
        checkpoint: dict[str, Any],
        module_tensors: set[int],
        config: dict[str, Any],
        num_train: int | None,
    ) -> None:
        """Write the airlab keys into Lightning's ``checkpoint`` dict. ``module_tensors`` are the ids of
        the module's parameters (saved by Lightning, so left out of the param-store entry). During
        validation the generators saved are those training continues from."""
        checkpoint[PARAM_STORE_KEY] = {
            name: tensor.detach().cpu().clone()
            for name, tensor in pyro.get_param_store().named_parameters()
            if id(tensor) not in module_tensors
        }
        checkpoint[CONFIG_KEY] = config
        checkpoint[NONFINITE_KEY] = self.guard.state_dict()
        checkpoint[RNG_KEY] = self.rng_before_validation or rng_state()
        checkpoint[NUM_TRAIN_KEY] = num_train
        reopen_stopped_epoch(checkpoint)

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Hold the saved param-store entries and generators (applied by :meth:`restore`); load the
        guard's counters now."""
        self.pending_param_store = dict(checkpoint.get(PARAM_STORE_KEY, {}))
        self.pending_rng = checkpoint.get(RNG_KEY)
        self.guard.load_state_dict(checkpoint.get(NONFINITE_KEY, {}))

    def restore_param_store(self, device: torch.device) -> None:
        """Move the held entries into Pyro's param store, on ``device``."""
        store = pyro.get_param_store()
        for name, value in self.pending_param_store.items():
            store[name] = value.to(device)
        self.pending_param_store = {}

    def restore(self, device: torch.device) -> None:
        """Before the first step of a resumed fit (after Lightning's restore and once the loader's first
        pass began, so that nothing draws before the step): the param store, then the generators."""
        self.restore_param_store(device)
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None

    def hold_generators(self) -> None:
        """Validation (and the callbacks' pictures and counts) draws from the generators: keep their state."""
        self.rng_before_validation = rng_state()

    def release_generators(self) -> None:
        """Put the generators back, so training draws the same with or without validation in between."""
        if self.rng_before_validation is not None:
            set_rng_state(self.rng_before_validation)
            self.rng_before_validation = None


class CheckpointedTraining(pl.LightningModule):
    """The checkpoint hooks of a LightningModule that keeps a :class:`TrainingState` as ``resume_state``
    and its run's ``config`` and ``num_train`` (the SVI module): Lightning calls them at every save, at
    a resume, when training starts and around every validation."""

    resume_state: TrainingState
    config: dict[str, Any]
    num_train: int | None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the param store's estimator state, the config, the guard and the generators."""
        module_tensors = {id(p) for p in self.parameters()}
        self.resume_state.save(checkpoint, module_tensors, self.config, self.num_train)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Hold the saved param-store entries and generators until training starts."""
        self.resume_state.load(checkpoint)

    def on_train_start(self) -> None:
        """Restore the held state on this device before the first step."""
        self.resume_state.restore(self.device)

    def on_validation_start(self) -> None:
        """Keep the generators' state: validation and its pictures draw from them."""
        self.resume_state.hold_generators()

    def on_validation_end(self) -> None:
        """Put the generators back, so training draws the same with or without validation."""
        self.resume_state.release_generators()
