"""Bit-exact resume: 2N steps in one run equal N steps, a stop, and N more steps resumed from the checkpoint.

Everything a step depends on must come back: weights, optimizer state, Pyro's decaying averages, the
non-finite guard, the loader's place in its epoch and every random generator. The final ``last.ckpt``
of both runs is compared with ``torch.equal`` (bit for bit, no tolerance): weights, optimizer state,
param store, guard counters, loader position and generator states. Validation, pictures and the
gradient-variance monitor run in between with the default callbacks (they keep the generators'
states), and the runs stop mid-epoch as well as at an epoch's end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyro
import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.types import _Stateful

from airlab.data.in_memory import BatchedTensorDataset, make_loader
from airlab.training.run import EXIT_SIGTERM, train
from tests.conftest import FAST, TINY_AIR_MODEL

# 96 training images in batches of 32 (debug=fast): 3 steps an epoch, a validation after each epoch.
VAE = [*FAST, "model.hidden_dim=32", "seed=0", "test=false", "trainer.max_epochs=100"]
AIR = [
    *FAST,
    "model=air",
    "data=multimnist",
    *TINY_AIR_MODEL,
    "elbo=tracegraph",
    "seed=0",
    "test=false",
    "trainer.max_epochs=100",
    "callbacks.reconstructions.every_n_epochs=1",  # AIR's pictures after every validation
    "callbacks.grad_variance.every_n_steps=3",  # and the monitor's extra draws at step 3
    "callbacks.grad_variance.num_samples=2",
]


def assert_equal_tree(a: Any, b: Any, where: str) -> None:
    """``a`` and ``b`` hold the same structure and bit-identical tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_equal_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_run_state(one_go: dict[str, Any], resumed: dict[str, Any]) -> None:
    """Two checkpoints at the same step of the same run, one trained through, one resumed."""
    assert one_go["global_step"] == resumed["global_step"]
    for key in ("state_dict", "optimizer_states", "pyro_param_store", "airlab_nonfinite", "airlab_rng"):
        assert_equal_tree(one_go[key], resumed[key], key)
    loader = "loops", "fit_loop", "state_dict", "combined_loader"
    first, second = one_go, resumed
    for key in loader:
        first, second = first[key], second[key]
    assert first == second  # the loader's epoch and place in it


def train_steps(make_cfg, overrides: list[str], steps: int, run: str, *extra: str) -> dict[str, Any]:
    """Train ``steps`` steps (from scratch or resumed); the run's final ``last.ckpt``, loaded."""
    pyro.clear_param_store()  # as in a new process
    cfg = make_cfg([*overrides, f"trainer.max_steps={steps}", *extra], run=run)
    train(cfg)
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=False)


class SigtermAfter(pl.Callback):
    """Acts as if SIGTERM arrived during step ``step - 1``: Lightning stops after it, saving last.ckpt."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer._signal_connector.received_sigterm = True


@pytest.mark.parametrize(
    ("n", "stop"),
    [(4, "max_steps"), (3, "max_steps"), (4, "sigterm")],
    ids=["mid-epoch-ckpt_path=last", "epoch-end-ckpt_path=file", "sigterm-mid-epoch-ckpt_path=file"],
)
def test_vae_resumed_run_equals_the_uninterrupted_run(make_cfg, tmp_path, n: int, stop: str):
    """VAE, ``elbo=trace``: 4+4 steps stop in epoch 1 after its first batch (``max_steps``, resumed
    with ``ckpt_path=last``, or SIGTERM); 3+3 at the end of epoch 0."""
    overrides = [*VAE, f"paths.log_dir={tmp_path}/out"]
    if stop == "sigterm":
        sigterm = [f"+callbacks.sigterm._target_={__name__}.SigtermAfter", f"+callbacks.sigterm.step={n}"]
        with pytest.raises(SystemExit) as stopped:
            train_steps(make_cfg, overrides, 2 * n, "out/debug/first", *sigterm)
        assert stopped.value.code == EXIT_SIGTERM
    else:
        train_steps(make_cfg, overrides, n, "out/debug/first")
    first = tmp_path / "out/debug/first/checkpoints/last.ckpt"
    assert torch.load(first, weights_only=False)["global_step"] == n
    source = "last" if n == 4 and stop == "max_steps" else str(first)
    resumed = train_steps(make_cfg, overrides, 2 * n, "out/debug/resumed", f"ckpt_path={source}")
    one_go = train_steps(make_cfg, overrides, 2 * n, "out/debug/one_go")
    assert_same_run_state(one_go, resumed)


@pytest.mark.parametrize(
    ("baseline", "n"), [("decaying_avg", 4), pytest.param("nvil", 2, marks=pytest.mark.slow)]
)
def test_air_resumed_run_equals_the_uninterrupted_run(make_cfg, tmp_path, baseline: str, n: int):
    """AIR, ``elbo=tracegraph``: the decaying averages in Pyro's param store (or NVIL's baseline network
    and its parameter group), the annealed prior's step and the monitor's step all come back."""
    overrides = [*AIR, f"model.baseline={baseline}"]
    first = train_steps(make_cfg, overrides, n, "first")
    if baseline == "decaying_avg":
        assert first["pyro_param_store"]  # the averages are in the checkpoint
    path = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = train_steps(make_cfg, overrides, 2 * n, "resumed", f"ckpt_path={path}")
    one_go = train_steps(make_cfg, overrides, 2 * n, "one_go")
    assert_same_run_state(one_go, resumed)


def test_training_loader_resumes_mid_epoch():
    """The loader is stateful for Lightning; restored after 2 of 5 batches, a fresh loader serves the
    other 3 of the same epoch's order, then whole epochs; the order depends on (seed, epoch) alone."""
    dataset = BatchedTensorDataset(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1))

    def loader():
        torch.manual_seed(7)  # the run's seed: the loader's shuffling seed
        made = make_loader(dataset, batch_size=2, shuffle=True, num_workers=0, pin_memory=False)
        made.sampler.set_epoch(3)
        return made

    def pixels(batches) -> list[list[int]]:
        return [(b["image"] * 255).round().int().flatten().tolist() for b in batches]

    whole = loader()
    assert isinstance(whole, _Stateful)
    epoch = pixels(whole)
    torch.manual_seed(0)
    assert pixels(whole) == epoch  # the global generator plays no part
    interrupted = loader()
    iterator = iter(interrupted)
    served = pixels([next(iterator), next(iterator)])
    state = interrupted.state_dict()
    assert state == {"epoch": 3, "batches": 2, "seed": 7}
    restored = loader()
    restored.sampler.set_epoch(0)
    restored.load_state_dict(state)
    assert served + pixels(restored) == epoch
    assert pixels(restored) == epoch  # the next pass is whole again
