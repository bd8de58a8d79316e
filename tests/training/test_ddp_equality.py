"""DDP equals one process, on 2 gloo processes (CPU), without Lightning's Trainer.

What "equals" means: W=2 ranks, each training on B=3 images, make the same parameter update as one
process training on the W*B=6 images that are their concatenation (rank 0's first), with the same
dataset size N (so the same N/(W*B) scale) and the same initialisation. ``SVIModule.training_step``
makes this hold: it scales the estimator to the global batch and multiplies the surrogate by W, so
that DDP's mean of the ranks' gradients is the sum over the global batch. The gradient averaging of
DDP is done here by hand (all-reduce, divide by W), and the optimizer is SGD, whose update is
proportional to the gradient (Adam's first step is lr * sign(g), which would hide a wrong scale).

How the latent noise is fixed: :class:`FixedNoise` draws every guide sample from generators seeded by
(site, global image index, step), through the site's own distribution (``loc + scale * eps`` for a
Normal, so pathwise gradients stay; ``u < probs`` for a Bernoulli). Image i therefore gets the same
draws whether it sits in the single process's batch or in a rank's half of it.

Covered: ``trace`` on the VAE (no dataset scale), ``tracegraph`` on a small AIR (N/B scale) with
``nvil`` and with ``decaying_avg`` baselines. Two steps each, so the second step uses the decaying
averages of the first; after every step the ranks' decaying averages must equal each other and the
single process's (they are synchronised, see ``airlab/estimators/baselines.py``).
"""

from __future__ import annotations

import functools
import warnings
import zlib
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed
import torch.multiprocessing
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from airlab.estimators import TraceEstimator, TraceGraphEstimator
from airlab.estimators.baselines import AVERAGE_PREFIX
from airlab.models.vae import VAE
from airlab.training.svi_module import SVIModule

WORLD = 2
LOCAL_BATCH = 3
NUM_TRAIN = 60
STEPS = 2
#: SGD's learning rate per model: updates of 1e-2 to 1, three orders or more above the tolerance.
LR = {"vae": 1e-2, "air": 1e-4}
#: NVIL's baseline network regresses costs of about 1e3 (N/B = 10): its gradients are 1e5.
BASELINE_LR = 1e-7
TOLERANCE = 1e-5
CASES = ("vae-trace", "air-tracegraph-nvil", "air-tracegraph-decaying_avg")


class FixedNoise(Messenger):
    """Guide draws that depend only on (site, global image index, ``step``): see the module docstring."""

    def __init__(self, offset: int) -> None:
        super().__init__()
        self.offset = offset  # the global index of this process's first image
        self.step = 0

    def _row_generator(self, name: str, row: int) -> torch.Generator:
        seed = zlib.crc32(f"{name}/{self.offset + row}/{self.step}".encode())
        return torch.Generator().manual_seed(seed)

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["is_observed"] or msg["value"] is not None or isinstance(msg["fn"], _Subsample):
            return  # observed, already set, or a plate's index draw
        base = msg["fn"]
        while isinstance(base, dist.Independent | dist.MaskedDistribution):
            base = base.base_dist
        shape = msg["fn"].shape()
        rows = []
        for row in range(shape[0]):
            generator = self._row_generator(msg["name"], row)
            if isinstance(base, dist.Normal):
                rows.append(torch.randn(shape[1:], generator=generator))
            elif isinstance(base, dist.Bernoulli):
                rows.append(torch.rand(shape[1:], generator=generator))
            else:
                raise TypeError(f"FixedNoise: no rule for {type(base).__name__} at {msg['name']}")
        noise = torch.stack(rows)
        if isinstance(base, dist.Normal):
            msg["value"] = base.loc.expand(shape) + base.scale.expand(shape) * noise
        else:
            msg["value"] = (noise < base.probs.expand(shape)).to(base.probs.dtype)


def build_module(case: str) -> SVIModule:
    """The case's model and estimator in an SVIModule, initialised from seed 0."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    if case == "vae-trace":
        model, estimator = VAE(image_shape=(1, 8, 8), z_dim=3, hidden_dim=16), TraceEstimator()
    else:
        from tests.models.test_air_fast_step import small_air

        model, estimator = small_air(case.rsplit("-", 1)[1]), TraceGraphEstimator()
    estimator.bind(model)
    optimizer = functools.partial(torch.optim.SGD, lr=LR[case.split("-")[0]])
    return SVIModule(model, estimator, optimizer, baseline_lr=BASELINE_LR, num_train=NUM_TRAIN)


def global_batch(case: str) -> torch.Tensor:
    """The W*B images one process trains on; rank r trains on rows r*B .. (r+1)*B - 1."""
    shape = (1, 8, 8) if case == "vae-trace" else (1, 20, 20)
    return torch.rand(WORLD * LOCAL_BATCH, *shape, generator=torch.Generator().manual_seed(7))


def train_steps(case: str, rank: int, world: int) -> list[dict[str, Any]]:
    """``STEPS`` SGD steps of this rank (or of the single process when ``world == 1``): per step the
    gradients (after averaging across ranks), the parameters after the update and the averages."""
    module = build_module(case)
    images = global_batch(case)
    local = images.shape[0] // world
    noise = FixedNoise(offset=rank * local)
    module.guide_fn = noise(module.model.guide)
    optimizer = module.configure_optimizers()
    params = list(module.parameters())
    record = [{"params": [p.detach().clone() for p in params]}]
    for step in range(STEPS):
        noise.step = step
        optimizer.zero_grad()
        module.training_step({"image": images[rank * local : (rank + 1) * local]}, step).backward()
        for p in params:  # what DDP's backward does: the mean of the ranks' gradients
            p.grad = torch.zeros_like(p) if p.grad is None else p.grad
            if world > 1:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
        grads = [p.grad.clone() for p in params]
        optimizer.step()
        store = pyro.get_param_store()
        averages = {k: store[k].detach().clone() for k in store.keys() if k.startswith(AVERAGE_PREFIX)}
        record.append({"grads": grads, "params": [p.detach().clone() for p in params], "averages": averages})
    return record


def ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One rank: join the gloo group, train every case, save the records."""
    warnings.filterwarnings("ignore", message="You are trying to `self.log")  # no Trainer here
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        records = {case: train_steps(case, rank, world) for case in CASES}
    finally:
        torch.distributed.destroy_process_group()
    torch.save(records, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_two_emulated_ranks_in_one_process_equal_one_process(monkeypatch):
    """The fast check (no processes): AIR with decaying averages, two ranks emulated one after the
    other in this process, sharing its param store (which then holds what synchronised ranks hold),
    with DDP's mean of gradients taken by hand. Gradients and parameters equal the single process's."""
    import airlab.estimators.baselines
    import airlab.training.svi_module

    case = "air-tracegraph-decaying_avg"
    single = train_steps(case, rank=0, world=1)
    ranks = [build_module(case) for _ in range(WORLD)]
    pyro.clear_param_store()
    images = global_batch(case)
    noises = [FixedNoise(offset=r * LOCAL_BATCH) for r in range(WORLD)]
    optimizers = []
    for module, noise in zip(ranks, noises, strict=True):
        module.guide_fn = noise(module.model.guide)
        optimizers.append(module.configure_optimizers())
    monkeypatch.setattr(airlab.training.svi_module, "rank_and_world", lambda: (0, WORLD))
    monkeypatch.setattr(
        airlab.training.svi_module, "synchronise_averages", lambda: None
    )  # the store is shared
    for step in range(STEPS):
        for rank, (module, noise) in enumerate(zip(ranks, noises, strict=True)):
            monkeypatch.setattr(
                airlab.estimators.baselines, "rank_and_world", lambda rank=rank: (rank, WORLD)
            )
            noise.step = step
            module.zero_grad()
            batch = {"image": images[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH]}
            module.training_step(batch, step).backward()
        for params in zip(*(module.parameters() for module in ranks), strict=True):
            mean = sum(p.grad for p in params) / WORLD
            for p in params:
                p.grad = mean.clone()
        for optimizer in optimizers:
            optimizer.step()
        for module in ranks:
            got = [p.detach() for p in module.parameters()]
            assert max_difference(got, single[step + 1]["params"]) <= TOLERANCE
        store = pyro.get_param_store()
        for name, value in single[step + 1]["averages"].items():
            assert torch.allclose(store[name].detach(), value, rtol=1e-6, atol=TOLERANCE)


@pytest.fixture(scope="module")
def ddp_records(tmp_path_factory) -> list[dict[str, list[dict[str, Any]]]]:
    """Every case trained on 2 gloo ranks (one spawn for all cases): the records of rank 0 and 1."""
    out_dir = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(
        ddp_worker, args=(WORLD, str(out_dir / "init"), str(out_dir)), nprocs=WORLD, join=True
    )
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b, strict=True))


@pytest.mark.slow  # one spawn of 2 processes: 15 to 40 s
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("case", CASES)
def test_ddp_step_equals_one_process_on_the_concatenated_batch(case, ddp_records):
    """Both ranks' gradients and updates equal the single process's within 1e-5, step after step;
    the decaying averages are the same on both ranks and equal the single process's."""
    single = train_steps(case, rank=0, world=1)
    for rank_records in ddp_records:
        ranked = rank_records[case]
        for step in range(1, STEPS + 1):
            expected, got = single[step], ranked[step]
            updates = [p - q for p, q in zip(expected["params"], single[step - 1]["params"], strict=True)]
            ddp_updates = [p - q for p, q in zip(got["params"], ranked[step - 1]["params"], strict=True)]
            assert max(float(u.abs().max()) for u in updates) > 1e-3  # a real update, not a no-op
            difference = max_difference(ddp_updates, updates)
            print(
                f"{case} step {step}: largest update {max(float(u.abs().max()) for u in updates):.3g}, "
                f"largest difference {difference:.3g}"
            )
            assert difference <= TOLERANCE, (case, step)
            assert max_difference(got["params"], expected["params"]) <= TOLERANCE, (case, step)
            largest = max(float(g.abs().max()) for g in expected["grads"])
            assert max_difference(got["grads"], expected["grads"]) <= TOLERANCE * max(1.0, largest)
            assert got["averages"].keys() == expected["averages"].keys()
            assert bool(expected["averages"]) is case.endswith("decaying_avg")
            for name, value in expected["averages"].items():
                assert got["averages"][name].shape == value.shape == (WORLD * LOCAL_BATCH,)
                assert torch.allclose(got["averages"][name], value, rtol=1e-6, atol=TOLERANCE)
    for step in range(1, STEPS + 1):  # the ranks hold identical decaying averages
        first, second = (records[case][step]["averages"] for records in ddp_records)
        assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_decaying_average_of_another_batch_size_is_one_clear_error():
    """The store holds one average per position of the (global) batch: another size is refused."""
    from airlab.estimators.baselines import decaying_average

    decaying_average("site", torch.zeros(4), beta=0.5)
    with pytest.raises(ValueError, match="holds 4 batch positions, expected 3"):
        decaying_average("site", torch.zeros(3), beta=0.5)
