"""AIR: the geometric recursion, its count prior, the spatial transformer, site structure, baselines."""

from __future__ import annotations

from functools import partial

import pyro
import pytest
import torch
from pyro import poutine
from scipy.stats import chisquare

from airlab.estimators import TraceEstimator, TraceGraphEstimator
from airlab.models.air import AIR
from airlab.models.geometric import geometric, truncated_geometric_pmf
from airlab.training.svi_module import SVIModule
from airlab.utils.spatial import image_to_window, where_to_box, window_to_image

SMALL = dict(
    rnn_hidden=16,
    baseline_rnn_hidden=8,
    encoder_hidden=[16],
    decoder_hidden=[16],
    predict_hidden=[8],
    baseline_hidden=[8],
    z_what_dim=4,
)


def small_air(**kwargs) -> AIR:
    return AIR(**{**SMALL, **kwargs})


# -- the geometric recursion --------------------------------------------------------------------


def test_geometric_recursion_matches_the_pmf_and_has_a_site_per_flip():
    pyro.set_rng_seed(0)
    p, draws = 0.35, 4000
    counts, site_counts = [], []
    for _ in range(draws):
        trace = poutine.trace(geometric).get_trace(p)
        counts.append(trace.nodes["_RETURN"]["value"])
        site_counts.append(sum(1 for s in trace.nodes.values() if s["type"] == "sample"))
    assert site_counts == [c + 1 for c in counts]  # a different number of random choices per run
    k_max = 8  # pool the tail into the last cell
    observed = torch.bincount(torch.tensor(counts).clamp(max=k_max), minlength=k_max + 1).double()
    pmf = (1 - p) ** torch.arange(k_max + 1, dtype=torch.float64) * p
    pmf[-1] = (1 - p) ** k_max
    result = chisquare(observed.numpy(), (pmf * draws).numpy())
    assert result.pvalue > 0.01, result  # fixed seed: a deterministic check at the 1% level


@pytest.mark.parametrize("prior_type,value", [("bernoulli", 0.5), ("geometric", 0.3), ("bernoulli", 0.9)])
def test_air_prior_counts_follow_the_named_truncated_geometric(prior_type, value):
    pyro.set_rng_seed(1)
    air = small_air(z_pres_prior=value, z_pres_prior_type=prior_type, max_steps=3)
    images = torch.zeros(6000, 1, 50, 50)
    trace = poutine.trace(air.model).get_trace(images)
    counts = sum(trace.nodes[f"z_pres_{t}"]["value"].squeeze(-1) for t in range(3)).long()
    presence = value if prior_type == "bernoulli" else 1 - value
    expected = truncated_geometric_pmf(presence, 3) * len(counts)
    observed = torch.bincount(counts, minlength=4).double()
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 0.01, (observed, expected)


def test_annealing_moves_the_prior_with_the_step():
    air = small_air(
        z_pres_prior=0.5, z_pres_anneal="linear", anneal_begin=100, anneal_duration=100, anneal_target=0.1
    )
    assert [air.annealed_prior(s) for s in (0, 100, 150, 200, 999)] == pytest.approx(
        [0.5, 0.5, 0.3, 0.1, 0.1]
    )
    exp = small_air(
        z_pres_prior=1e-1, z_pres_anneal="exp", anneal_begin=0, anneal_duration=10, anneal_target=1e-5
    )
    assert exp.annealed_prior(5) == pytest.approx(1e-3)
    exp.on_train_step(10)
    assert float(exp.presence_prob()) == pytest.approx(1e-5)


def test_anneal_target_is_a_presence_probability_for_both_prior_types():
    """geometric's z_pres_prior is a stop probability, but the annealing target means P(one more
    object) for both types: the default target 1e-5 means fewer objects, never more."""
    settings = dict(z_pres_anneal="exp", anneal_begin=0, anneal_duration=10, anneal_target=1e-5)
    bernoulli = small_air(z_pres_prior=0.4, z_pres_prior_type="bernoulli", **settings)
    geometric = small_air(z_pres_prior=0.6, z_pres_prior_type="geometric", **settings)
    for step in (0, 3, 7, 10, 50):
        bernoulli.on_train_step(step)
        geometric.on_train_step(step)
        assert float(geometric.presence_prob()) == pytest.approx(float(bernoulli.presence_prob()), rel=1e-5)
    assert float(geometric.presence_prob()) == pytest.approx(1e-5)
    assert [geometric.annealed_prior(s) for s in (0, 5, 10)] == pytest.approx(
        [0.4, 0.4 * (1e-5 / 0.4) ** 0.5, 1e-5]
    )


# -- the spatial transformer --------------------------------------------------------------------


def test_cropping_never_divides_by_a_zero_scale():
    """A proposal with scale 0 (or -0, or tiny) crops a finite window, with finite gradients."""
    images = torch.rand(4, 20, 20)
    z_where = torch.tensor([[0.0, 0.1, 0.2], [-0.0, 0.0, 0.0], [1e-12, 0.3, 0.3], [2.0, 0.0, 0.0]])
    z_where.requires_grad_(True)
    windows = image_to_window(images, z_where, 8)
    windows.sum().backward()
    assert torch.isfinite(windows).all() and torch.isfinite(z_where.grad).all()
    assert torch.isfinite(where_to_box(z_where.detach(), 20)).all()


def smooth_windows(n: int, size: int = 28) -> torch.Tensor:
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([torch.exp(-((xx - 0.2 * i) ** 2 + yy**2) / 0.3) for i in range(n)])


def test_window_to_image_to_window_recovers_the_window():
    windows = smooth_windows(3)
    z_where = torch.tensor([[50 / 28, 0.0, 0.0], [2.2, 0.5, -0.4], [3.0, -1.0, 1.2]])
    back = image_to_window(window_to_image(windows, z_where, 50), z_where, 28)
    assert (back - windows).abs().max() < 0.05  # bilinear resampling error on a smooth window
    exact = torch.tensor([[50 / 28, 0.0, 0.0]])  # pixel-aligned: exact
    assert torch.allclose(
        image_to_window(window_to_image(windows[:1], exact, 50), exact, 28), windows[:1], atol=1e-5
    )


def test_boxes_sit_where_the_windows_land():
    windows = torch.ones(2, 28, 28)
    z_where = torch.tensor([[2.5, 0.4, -0.6], [2.0, -0.2, 0.2]])
    images = window_to_image(windows, z_where, 50)
    boxes = where_to_box(z_where, 50)
    for image, (x0, y0, x1, y1), scale in zip(images, boxes.tolist(), z_where[:, 0].tolist(), strict=True):
        ys, xs = (image > 0.5).nonzero(as_tuple=True)
        assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
        assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1
        assert x1 - x0 == pytest.approx(50 / scale) and y1 - y0 == pytest.approx(50 / scale)


def test_a_zero_scale_proposal_does_not_divide_by_zero():
    crops = image_to_window(torch.rand(2, 50, 50), torch.tensor([[0.0, 0.1, 0.1], [-0.0, 0.0, 0.0]]), 28)
    assert torch.isfinite(crops).all()


# -- model and guide structure -----------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_sites_after_the_last_object_are_masked(count):
    air = small_air(max_steps=3)
    images = torch.rand(2, 1, 50, 50)
    z_pres = {f"z_pres_{t}": torch.full((2, 1), float(t < count)) for t in range(3)}
    guide_trace = poutine.trace(poutine.condition(air.guide, data=z_pres)).get_trace(images)
    for name in z_pres:  # fixed by us, but latent for the model that replays them
        guide_trace.nodes[name]["is_observed"] = False
    model_trace = poutine.trace(poutine.replay(air.model, trace=guide_trace)).get_trace(images)
    for trace in (guide_trace, model_trace):
        trace.compute_log_prob()
        names = [n for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"]
        assert names[:9] == [f"{kind}_{t}" for t in range(3) for kind in ("z_pres", "z_where", "z_what")]
        for t in range(3):
            for kind, shape in (("z_where", (2, 3)), ("z_what", (2, 4))):
                site = trace.nodes[f"{kind}_{t}"]
                assert site["value"].shape == shape
                active = bool((site["log_prob"] != 0).all())
                assert active is (t < count), (kind, t, count)
        # after the first absent object, z_pres is certain (probability 0), so its log-prob is 0
        for t in range(count + 1, 3):
            assert (trace.nodes[f"z_pres_{t}"]["log_prob"] == 0).all()
    assert model_trace.nodes["obs"]["value"].shape == (2, 2500)
    inferred = air.infer(images)
    assert inferred["reconstruction"].shape == (2, 1, 50, 50) and inferred["z_where"].shape == (2, 3, 3)


def test_parameter_groups_partition_the_parameters():
    air = small_air(baseline="nvil")
    groups = air.parameter_groups()
    assert set(groups) == {
        "guide/z_pres",
        "guide/z_where",
        "guide/z_what",
        "guide/rnn",
        "model/decoder",
        "baseline",
    }
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(air.parameters()))
    assert {id(p) for p in air.baseline_parameters()} == {id(p) for p in groups["baseline"]}


# -- baselines ----------------------------------------------------------------------------------


def twin_models():
    """AIR with and without an NVIL baseline, with identical guide and decoder weights."""
    torch.manual_seed(0)
    with_baseline = small_air(baseline="nvil", baseline_scalar=50.0)
    without = small_air(baseline="none")
    without.load_state_dict(with_baseline.state_dict(), strict=False)
    return with_baseline, without


def test_nvil_baseline_enters_the_surrogate():
    with_baseline, without = twin_models()
    images = torch.rand(3, 1, 50, 50)
    outputs = {}
    for name, model in (("nvil", with_baseline), ("none", without)):
        pyro.set_rng_seed(5)
        outputs[name] = TraceGraphEstimator()(model.model, model.guide, images)
    nvil, none = outputs["nvil"], outputs["none"]
    assert nvil.loss == pytest.approx(float(none.loss))  # same draws, same ELBO estimate
    assert nvil.baseline_loss is not None and float(nvil.baseline_loss) > 0 and none.baseline_loss is None
    # Each z_pres_t score term is score * (cost - baseline): the difference is score * baseline.
    trace = nvil.guide_trace
    for t in range(3):
        score = trace.nodes[f"z_pres_{t}"]["log_prob"]
        baseline = trace.nodes[f"z_pres_{t}"]["infer"]["baseline"]["baseline_value"].detach()
        expected = float(none.score_terms[f"z_pres_{t}"]) - float((score * baseline).sum())
        assert float(nvil.score_terms[f"z_pres_{t}"]) == pytest.approx(expected, rel=1e-4, abs=1e-3)
    # ... and the baseline network learns only from the squared error.
    grads = torch.autograd.grad(nvil.surrogate, list(with_baseline.baseline_parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    grad_from_bl = torch.autograd.grad(
        nvil.baseline_loss, list(with_baseline.rnn.parameters()), allow_unused=True
    )
    assert all(g is None or g.abs().sum() == 0 for g in grad_from_bl)  # detached inputs


def test_decaying_average_baseline_is_used_by_tracegraph_only():
    air = small_air(baseline="decaying_avg")
    images = torch.rand(3, 1, 50, 50)
    TraceEstimator()(air.model, air.guide, images)
    assert not [k for k in pyro.get_param_store().keys() if k.startswith("__baseline")]
    TraceGraphEstimator()(air.model, air.guide, images)
    assert sorted(k for k in pyro.get_param_store().keys() if k.startswith("__baseline")) == [
        f"__baseline_avg_downstream_cost_z_pres_{t}" for t in range(3)
    ]


def test_baseline_group_is_updated_at_its_own_rate():
    """One Adam step through Lightning: Adam's first update is lr * sign(grad) per coordinate."""
    import pytorch_lightning as pl

    air = small_air(baseline="nvil", baseline_scalar=10.0)
    before = {name: p.detach().clone() for name, p in air.named_parameters()}
    module = SVIModule(air, TraceGraphEstimator(), partial(torch.optim.Adam, lr=1e-4), baseline_lr=0.1)
    batch = {"image": torch.rand(4, 1, 50, 50), "count": torch.ones(4, dtype=torch.long)}
    data = torch.utils.data.DataLoader([batch], batch_size=None)
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=data)
    assert trainer.global_step == 1
    step = {name: (p.detach() - before[name]).abs().max().item() for name, p in air.named_parameters()}
    baseline_steps = [v for n, v in step.items() if n.startswith("baseline_net.")]
    main_steps = [v for n, v in step.items() if not n.startswith("baseline_net.")]
    assert max(baseline_steps) == pytest.approx(0.1, rel=0.01)
    assert max(main_steps) == pytest.approx(1e-4, rel=0.01)


def test_prior_samples_come_in_rows_of_a_fixed_number_of_objects():
    """``val/samples``: with a tiny z_pres prior the prior draws empty canvases; each row fixes the
    count instead, so row n shows n decoded objects."""
    from airlab.models.air import AIR

    torch.manual_seed(0)
    air = AIR(
        image_shape=(1, 20, 20), max_steps=3, z_what_dim=4, window_size=8, rnn_hidden=8, z_pres_prior=1e-8
    )
    air.eval()
    rows = air.sample_rows(5)
    assert list(rows) == ["0 objects", "1 object", "2 objects", "3 objects"]
    assert all(images.shape == (5, 1, 20, 20) for images in rows.values())
    ink = [float(images.sum()) for images in rows.values()]
    # The decoder's output bias draws faint ink even for an empty canvas; each object adds more.
    assert ink[0] < ink[1] < ink[2] < ink[3]
    assert float(air.sample(5).sum()) == pytest.approx(ink[0], rel=1e-3)  # the prior alone: empty
