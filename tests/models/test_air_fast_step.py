"""AIR's fast training step gives Pyro's TraceGraph_ELBO gradient, and the compiled path compiles once."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceGraph_ELBO

from airlab.estimators import JitTraceGraphEstimator, TraceGraphEstimator
from airlab.estimators.baselines import AVERAGE_PREFIX
from airlab.models.air import AIR
from airlab.models.air_nets import ImageLSTMCell

SCALE = 250.0  # the dataset scale N/B: baselines see costs of this size


def small_air(baseline: str) -> AIR:
    return AIR(
        image_shape=(1, 20, 20),
        max_steps=3,
        z_what_dim=4,
        window_size=8,
        rnn_hidden=16,
        encoder_hidden=(12,),
        decoder_hidden=(12,),
        predict_hidden=(12,),
        baseline=baseline,
        baseline_rnn_hidden=8,
        baseline_hidden=(6,),
        # A prior that keeps objects likely, so that every step has present and absent images.
        z_pres_prior=0.6,
    )


def set_averages(values: dict[str, torch.Tensor]) -> None:
    store = pyro.get_param_store()
    for name, value in values.items():
        if name in store:
            del store[name]
        store[name] = value.clone()


@pytest.mark.parametrize("baseline", ["none", "decaying_avg", "nvil"])
def test_declared_surrogate_gives_pyros_tracegraph_gradient(baseline):
    """Same replayed guide draws: every parameter's gradient equals ``TraceGraph_ELBO.loss_and_grads``."""
    torch.set_default_dtype(torch.float64)  # exact arithmetic up to summation order
    try:
        torch.manual_seed(0)
        air = small_air(baseline)
        images = torch.rand(6, 1, 20, 20)
        pyro.set_rng_seed(1)
        draws = poutine.trace(air.guide).get_trace(images)
        counts = sum(draws.nodes[f"z_pres_{t}"]["value"] for t in range(3)).squeeze(-1)
        assert len(set(counts.tolist())) >= 2  # the draws mix counts, so masking is exercised
        params = [p for p in air.parameters()]
        air.zero_grad()

        replays = []

        def guide(*args):
            """The guide under the seed of the draws above: the same draws, recorded to check it."""
            tracer = poutine.trace(air.guide)
            tracer(*args)
            replays.append(tracer.msngr.trace)

        averages = {AVERAGE_PREFIX + f"z_pres_{t}": 50 * torch.randn(6) for t in range(3)}
        set_averages(averages)
        pyro.set_rng_seed(1)
        pyro_loss = TraceGraph_ELBO().loss_and_grads(
            poutine.scale(air.model, SCALE), poutine.scale(guide, SCALE), images
        )
        expected = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        pyro_averages = {k: pyro.param(k).detach().clone() for k in averages}
        air.zero_grad()

        for dependencies in ("declared", "provenance"):
            set_averages(averages)
            estimator = TraceGraphEstimator(dependencies=dependencies)
            estimator.bind(air)
            assert (estimator.declared is not None) is (dependencies == "declared")
            pyro.set_rng_seed(1)
            out = estimator(air.model, guide, images, scale=SCALE)
            got = torch.autograd.grad(out.surrogate, params, allow_unused=True)
            assert float(out.loss) == pytest.approx(pyro_loss, rel=1e-10)
            for p, g, e in zip(params, got, expected, strict=True):
                g = torch.zeros_like(p) if g is None else g
                assert torch.allclose(g, e, rtol=1e-9, atol=1e-9 * e.abs().max().item()), (
                    dependencies,
                    p.shape,
                )
            assert any(e.abs().max() > 0 for e in expected)
            for name, value in pyro_averages.items():
                assert torch.allclose(pyro.param(name).detach(), value, rtol=1e-12)
            assert (out.baseline_loss is not None) is (baseline == "nvil")
        assert len(replays) == 3
        for replay in replays:
            for name, site in draws.nodes.items():
                if site["type"] == "sample":
                    assert torch.equal(replay.nodes[name]["value"].detach(), site["value"].detach()), name
    finally:
        torch.set_default_dtype(torch.float32)


def test_declared_dependencies_leave_the_param_store_flat():
    """The decaying averages update in place: one store entry per site, however many steps run."""
    air = small_air("decaying_avg")
    estimator = TraceGraphEstimator()
    estimator.bind(air)
    images = torch.rand(4, 1, 20, 20)
    store = pyro.get_param_store()
    sizes = []
    for _ in range(200):
        estimator(air.model, air.guide, images, scale=SCALE).surrogate.backward()
        sizes.append((len(store._params), len(store._param_to_name)))
    # the same entries (and reverse-map entries) for all 200 steps, one decaying average per z_pres site
    assert set(sizes) == {sizes[0]} and sizes[0][0] == sizes[0][1]
    assert len([name for name in store.keys() if name.startswith(AVERAGE_PREFIX)]) == air.max_steps


def test_a_non_finite_cost_leaves_the_decaying_average_as_it_was():
    from airlab.estimators.baselines import decaying_average

    decaying_average("site", torch.tensor([1.0, 2.0]), beta=0.5)
    decaying_average("site", torch.tensor([3.0, float("nan")]), beta=0.5)
    average = pyro.get_param_store()._params[AVERAGE_PREFIX + "site"]
    # from zeros: 0.5 then 0.5 * 0.5 + 0.5 * 3; the second element keeps 0.5 * 2 instead of nan
    assert average.tolist() == [1.75, 1.0]


def test_compiled_estimator_compiles_once_for_fresh_bound_methods():
    """``est(air.model, air.guide, x)`` makes new bound-method objects at every call: no recompilation."""
    air = small_air("nvil")
    estimator = JitTraceGraphEstimator()
    estimator.bind(air)
    images = torch.rand(4, 1, 20, 20)
    for _ in range(10):
        estimator(air.model, air.guide, images, scale=SCALE).surrogate.backward()
    assert estimator.num_compilations == 1
    other = small_air("nvil")  # another model is another graph
    pyro.clear_param_store()  # its modules take the same names
    estimator(other.model, other.guide, images, scale=SCALE)
    assert estimator.num_compilations == 2


def test_image_lstm_cell_is_an_lstm_cell_on_the_concatenated_input():
    """Projecting the image once and stepping on the rest is ``nn.LSTMCell`` on ``cat([image, rest])``;
    a checkpoint of ``nn.LSTMCell`` (one ``weight_ih``) loads into it."""
    torch.manual_seed(0)
    reference = torch.nn.LSTMCell(30 + 5, 8)
    cell = ImageLSTMCell(30, 5, 8)
    cell.load_state_dict(reference.state_dict())
    image = torch.randn(4, 30)
    state = (torch.randn(4, 8), torch.randn(4, 8))
    expected_state = state
    image_gates = cell.project_image(image)
    for _ in range(3):
        step_input = torch.randn(4, 5)
        expected_state = reference(torch.cat([image, step_input], -1), expected_state)
        state = cell.step(image_gates, step_input, state)
        for got, expected in zip(state, expected_state, strict=True):
            assert torch.allclose(got, expected, atol=1e-6)
    image_grad, step_grad = torch.autograd.grad(state[0].sum(), [cell.image_to_gates, cell.weight_ih_step])
    expected_grad = torch.autograd.grad(expected_state[0].sum(), reference.weight_ih)[0]
    assert torch.allclose(torch.cat([image_grad.t(), step_grad], 1), expected_grad, atol=1e-6)


def test_image_lstm_cell_loads_the_earlier_image_major_layout():
    """A checkpoint of the cell before ``image_to_gates`` (``weight_ih_image`` ``[4H, image]``) loads as
    the same function, even where the two shapes are equal (image features = 4H)."""
    torch.manual_seed(0)
    cell = ImageLSTMCell(32, 5, 8)
    old = {k: v for k, v in cell.state_dict().items() if k != "image_to_gates"}
    old["weight_ih_image"] = cell.image_to_gates.detach().t().clone()
    loaded = ImageLSTMCell(32, 5, 8)
    loaded.load_state_dict(old)
    image = torch.randn(3, 32)
    assert torch.equal(loaded.project_image(image), cell.project_image(image))


def test_the_baseline_network_runs_only_in_training():
    """Validation and pictures (eval mode) never need the NVIL baseline's value."""
    air = small_air("nvil")
    calls = []
    air.baseline_net.register_forward_hook(lambda *args: calls.append(1))
    images = torch.rand(4, 1, 20, 20)
    air.eval()
    air.infer(images)
    assert calls == []
    air.train()
    poutine.trace(air.guide).get_trace(images)
    assert len(calls) == 3
