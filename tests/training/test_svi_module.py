"""The SVI module on its own, with a two-line Gaussian model: the loss scale, the surrogate under DDP's
world size, the parameter groups, non-finite steps, headline metrics, and its side of a checkpoint."""

from __future__ import annotations

import functools
import io
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from airlab.contracts.model import GenerativeModel
from airlab.estimators import TraceEstimator
from airlab.resume.training_state import CONFIG_KEY, NUM_TRAIN_KEY, PARAM_STORE_KEY, RNG_KEY
from airlab.training import svi_module
from airlab.training.svi_module import SVIModule


class Gaussian(GenerativeModel):
    """z ~ N(0, 1), x | z ~ N(z, 1) per datum; q(z | x) = N(w x + b, 1). A learned 'baseline' layer
    stands in for a baseline network's parameter group."""

    inputs = ("x",)
    scale_to_dataset = True
    headline_metrics = ("mean_x",)

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(1, 1)
        self.baseline = nn.Linear(1, 1)

    def baseline_parameters(self):
        return self.baseline.parameters()

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.encoder(x), 1.0).to_event(1))

    def evaluate(self, batch):
        return {"mean_x": batch["x"].mean()}, {}


def make_module(num_train: int | None = 100, **kwargs) -> SVIModule:
    torch.manual_seed(0)
    model = Gaussian()
    estimator = TraceEstimator()
    estimator.bind(model)
    optimizer = functools.partial(torch.optim.SGD, lr=0.1)
    return SVIModule(model, estimator, optimizer, num_train=num_train, config={"seed": 0}, **kwargs)


def batch(size: int = 4) -> dict[str, torch.Tensor]:
    return {"x": torch.arange(size, dtype=torch.float32).view(size, 1)}


@pytest.fixture
def logged(monkeypatch):
    """What the module logs (no trainer), by tag: (value, prog_bar)."""
    seen: dict[str, tuple[float, bool]] = {}

    def log(self, name, value, prog_bar=False, **kwargs):
        seen[name] = (float(value), prog_bar)

    monkeypatch.setattr(SVIModule, "log", log)
    return seen


def test_loss_scale_is_the_dataset_size_over_the_batch():
    assert make_module(num_train=100).loss_scale(4) == 25.0
    assert make_module(num_train=None).loss_scale(4) == 1.0


def test_training_step_is_the_estimate_at_the_dataset_scale(logged):
    module = make_module(num_train=100)
    torch.manual_seed(3)
    surrogate = module.training_step(batch(), 0)
    torch.manual_seed(3)
    out = module.estimator(module.model_fn, module.guide_fn, batch()["x"], scale=25.0)
    assert float(surrogate) == pytest.approx(float(out.surrogate), rel=1e-6)
    # train/loss is per item and unscaled: the loss over N/B times the batch size.
    assert logged["train/loss"] == (pytest.approx(float(out.loss) / (25.0 * 4), rel=1e-6), True)
    assert logged["train/elbo"][0] == pytest.approx(-logged["train/loss"][0])


def test_surrogate_is_multiplied_by_the_world_size(monkeypatch, logged):
    one = make_module(num_train=None)
    torch.manual_seed(1)
    single = one.training_step(batch(), 0)
    monkeypatch.setattr(svi_module, "rank_and_world", lambda: (0, 2))
    two = make_module(num_train=None)
    torch.manual_seed(1)
    doubled = two.training_step(batch(), 0)
    assert float(doubled) == pytest.approx(2 * float(single), rel=1e-6)


def test_parameter_groups_put_the_baseline_apart_at_its_own_rate():
    groups = make_module(baseline_lr=0.5).parameter_groups()
    assert [g["name"] for g in groups] == ["main", "baseline"]
    assert groups[1]["lr"] == 0.5 and "lr" not in groups[0]
    module = make_module()
    main, baseline = module.parameter_groups()
    assert {id(p) for p in baseline["params"]} == {id(p) for p in module.model.baseline.parameters()}
    assert {id(p) for p in main["params"]} == {id(p) for p in module.model.encoder.parameters()}


def test_a_schedule_scales_every_group_and_keeps_the_baselines_ratio():
    schedule = functools.partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[2], gamma=0.5)
    plan = make_module(baseline_lr=1.0, scheduler=schedule).configure_optimizers()
    assert plan["lr_scheduler"]["interval"] == "step"
    optimizer, scheduler = plan["optimizer"], plan["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(3):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert rates == [[0.1, 1.0], [0.1, 1.0], [0.05, 0.5]]
    assert isinstance(make_module().configure_optimizers(), torch.optim.SGD)  # no schedule: the optimizer


def test_a_non_finite_loss_skips_the_step_and_drops_every_gradient(logged):
    module = make_module()
    module.losses_finite = False  # what training_step records for a nan or inf loss
    optimizer = module.configure_optimizers()
    for p in module.parameters():
        p.grad = torch.ones_like(p)

    class OneProcess:  # the two things the hook reads from its Trainer
        world_size = 1
        global_step = 0

    object.__setattr__(module, "_trainer", OneProcess())
    module.on_before_optimizer_step(optimizer)
    assert all(p.grad is None for p in module.parameters())
    assert logged["train/skipped_steps"][0] == 1.0


def test_validation_logs_the_models_headline_metric_on_the_progress_bar(logged):
    module = make_module()
    module.validation_step(batch(), 0)
    assert logged["val/mean_x"] == (1.5, True)
    assert logged["val/elbo"][1] is True
    assert math.isfinite(logged["val/elbo"][0])


def test_distribution_checks_turn_off_after_the_first_steps(monkeypatch):
    module = make_module(validate_args_steps=2)
    monkeypatch.setattr(SVIModule, "global_step", property(lambda self: 5))
    with module.distribution_checks():
        assert not pyro.infer.util.is_validation_enabled()
    always = make_module(validate_args_steps=-1)
    with pyro.validation_enabled(True), always.distribution_checks():
        assert pyro.infer.util.is_validation_enabled()


def test_checkpoint_holds_the_estimator_state_and_resumes_it():
    module = make_module()
    store = pyro.get_param_store()
    store["__baseline_avg_downstream_cost_z"] = torch.tensor([1.0, 2.0])
    pyro.module("encoder", module.model.encoder)  # the module's weights, in the store as training has them
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert list(checkpoint[PARAM_STORE_KEY]) == ["__baseline_avg_downstream_cost_z"]  # no module weights
    assert checkpoint[CONFIG_KEY] == {"seed": 0} and checkpoint[NUM_TRAIN_KEY] == 100
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # tensors and plain containers only
    expected = torch.rand(3)  # what training would draw next
    pyro.clear_param_store()
    torch.manual_seed(123)
    resumed = make_module()
    resumed.on_load_checkpoint(checkpoint)
    assert "__baseline_avg_downstream_cost_z" not in pyro.get_param_store()  # held until training starts
    resumed.on_train_start()
    assert torch.equal(pyro.param("__baseline_avg_downstream_cost_z").detach(), torch.tensor([1.0, 2.0]))
    torch.set_rng_state(checkpoint[RNG_KEY]["torch"])
    assert torch.equal(torch.rand(3), expected)


def test_validation_leaves_the_generators_where_training_left_them():
    module = make_module()
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    module.on_validation_start()
    torch.rand(100)  # validation and pictures draw
    module.on_validation_end()
    assert torch.equal(torch.rand(2), expected)
