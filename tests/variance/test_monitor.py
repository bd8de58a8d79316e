"""The gradient-variance monitor: its numbers, its lack of side effects, its tags, and the report."""

from __future__ import annotations

import json
import math
import random
from functools import partial

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger
from torch import nn

from airlab.contracts.model import GenerativeModel
from airlab.errors import ConfigError
from airlab.estimators import JitTraceGraphEstimator, TraceEstimator, TraceGraphEstimator
from airlab.training.run import train
from airlab.training.svi_module import SVIModule
from airlab.variance.estimate import gradient_variance
from airlab.variance.monitor import GradVarianceMonitor
from tests.conftest import FAST, read_events, run_script

MU = [1.0, -0.5, 0.3, 2.0, 0.0]
PHI = math.log(0.6 / 0.4)  # q(c = 1) = 0.6
PRIOR_C = 0.2


class Toy(GenerativeModel):
    """Guide: ``z ~ N(mu, 1)`` (5-D, reparameterised) and ``c ~ Bernoulli(sigmoid(phi))``; prior N(0, 1)
    and Bernoulli(0.2). Without ``observe`` the loss gradient is known in closed form (see below).

    ``rows`` > 1 gives every datum of a batch of that size its own (equal) row of parameters, so one
    draw holds ``rows`` independent copies of the one-datum gradient."""

    has_discrete_latents = True

    def __init__(self, observe: bool = False, baseline: bool = False, rows: int = 1) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(MU).repeat(rows, 1))
        self.phi = nn.Parameter(torch.full((rows,), PHI))
        self.observe = observe
        self.baseline = baseline
        self.register_buffer("guide_calls", torch.zeros(()))  # written by every guide call

    def model(self, images):
        pyro.module("toy", self)
        with pyro.plate("data", images.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(5), 1.0).to_event(1))
            c = pyro.sample("c", dist.Bernoulli(torch.tensor(PRIOR_C)))
            if self.observe:
                pyro.sample("x", dist.Normal(z.sum(-1) + 3 * c, 1.0), obs=images.flatten(1).mean(-1))

    def guide(self, images):
        pyro.module("toy", self)
        self.guide_calls += 1
        infer = {"baseline": {"use_decaying_avg_baseline": True}} if self.baseline else {}
        with pyro.plate("data", images.shape[0]):
            pyro.sample("z", dist.Normal(self.mu, 1.0).to_event(1))
            pyro.sample("c", dist.Bernoulli(logits=self.phi), infer=infer)

    def parameter_groups(self):
        return {"guide/z": [self.mu], "guide/c": [self.phi]}


def test_statistics_match_the_closed_form():
    """TraceGraph, per datum: the loss gradient for mu is z = mu + eps, total variance 5 (the dimension),
    E||g||^2 = ||mu||^2 + 5. For phi it is -(c - s) (log p(c) - log q(c)) with s = q(c = 1), a two-point
    variable. c's score term is all of phi's gradient and none of mu's. R = 100 rows (independent data)
    multiply variances and mean squared norms by R and leave the SNR alone. K = 100 draws: the relative
    standard error of the variances is below 1%; the tolerance is 5%."""
    rows = 100
    toy = Toy(rows=rows)
    result = gradient_variance(
        TraceGraphEstimator(),
        toy.model,
        toy.guide,
        (torch.zeros(rows, 1, 2, 2),),
        toy.parameter_groups(),
        num_samples=100,
        seed=3,
    )
    mu = torch.tensor(MU, dtype=torch.float64)
    s = 0.6
    v1, v0 = -(1 - s) * math.log(PRIOR_C / s), s * math.log((1 - PRIOR_C) / (1 - s))
    mean_c = s * v1 + (1 - s) * v0
    var_c = s * (1 - s) * (v1 - v0) ** 2
    expected = {
        "guide/z": {
            "var": 5.0 * rows,
            "mean_sq_norm": (float(mu @ mu) + 5.0) * rows,
            "snr": float(mu.norm()) / math.sqrt(5),
        },
        "guide/c": {
            "var": var_c * rows,
            "mean_sq_norm": (s * v1**2 + (1 - s) * v0**2) * rows,
            "snr": abs(mean_c) / math.sqrt(var_c),
        },
    }
    for group, values in expected.items():
        got = result.groups[group]
        for stat, value in values.items():
            assert getattr(got, stat) == pytest.approx(value, rel=0.05), (group, stat)
    assert set(result.terms) == {"c"}
    assert result.terms["c"] == pytest.approx(var_c * rows, rel=0.05)
    assert result.terms["c"] == pytest.approx(result.groups["guide/c"].var, rel=1e-9)


def test_statistics_equal_a_direct_computation_of_the_same_draws():
    """Trace: c's cost includes z's terms, so its score term reaches phi only but varies with z."""
    toy, estimator, images, k = Toy(observe=True), TraceEstimator(), torch.rand(4, 1, 2, 2), 7
    result = gradient_variance(
        estimator, toy.model, toy.guide, (images,), toy.parameter_groups(), num_samples=k, seed=11
    )
    pyro.set_rng_seed(11)  # the documented stream of the draws
    params = [toy.mu, toy.phi]
    total, term = [], []
    for _ in range(k):
        out = estimator(toy.model, toy.guide, images)
        total.append(
            torch.cat([g.flatten() for g in torch.autograd.grad(out.surrogate, params, retain_graph=True)])
        )
        term_grads = torch.autograd.grad(-out.score_terms["c"], params, allow_unused=True)
        term.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).flatten()
                    for g, p in zip(term_grads, params, strict=True)
                ]
            )
        )
    total_np, term_np = torch.stack(total).double().numpy(), torch.stack(term).double().numpy()
    for group, cols in (("guide/z", slice(0, 5)), ("guide/c", slice(5, 6))):  # rows=1: mu is [1, 5]
        g = total_np[:, cols]
        assert result.groups[group].var == pytest.approx(g.var(0, ddof=1).sum(), rel=1e-9)
        assert result.groups[group].mean_sq_norm == pytest.approx((g**2).sum(1).mean(), rel=1e-9)
        snr = np.linalg.norm(g.mean(0)) / math.sqrt(g.var(0, ddof=1).sum())
        assert result.groups[group].snr == pytest.approx(snr, rel=1e-9)
        per_dim = np.mean(np.abs(g.mean(0)) / g.std(0, ddof=1))
        assert result.groups[group].snr_per_dim == pytest.approx(per_dim, rel=1e-9)
    assert result.terms["c"] == pytest.approx(term_np.var(0, ddof=1).sum(), rel=1e-9)
    assert term_np[:, :5].std() == 0  # the term never reaches mu


def test_measurement_has_no_side_effects_and_is_reproducible():
    toy, estimator, images = Toy(observe=True, baseline=True), TraceGraphEstimator(), torch.rand(4, 1, 2, 2)
    for _ in range(3):  # a running average in the param store, as during training
        estimator(toy.model, toy.guide, images)
    store = pyro.get_param_store()
    avg_name = "__baseline_avg_downstream_cost_c"
    avg_before = store[avg_name].detach().clone()
    keys_before = set(store.keys())
    grads = [torch.full_like(p, 0.5) for p in toy.parameters()]
    for p, g in zip(toy.parameters(), grads, strict=True):
        p.grad = g
    weights = [p.detach().clone() for p in toy.parameters()]
    calls = toy.guide_calls.clone()
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    expected_next = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123), random.seed(123), np.random.seed(123)

    def measure(seed):
        return gradient_variance(
            estimator,
            toy.model,
            toy.guide,
            (images,),
            toy.parameter_groups(),
            num_samples=5,
            seed=seed,
            module=toy,
        )

    first = measure(seed=0)
    after = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected_next[0]) and after[1:] == expected_next[1:]
    assert set(store.keys()) == keys_before and torch.equal(store[avg_name].detach(), avg_before)
    assert all(p.grad is g for p, g in zip(toy.parameters(), grads, strict=True))
    assert all(torch.equal(p, w) for p, w in zip(toy.parameters(), weights, strict=True))
    assert torch.equal(toy.guide_calls, calls)  # the buffer the guide writes is put back
    assert measure(seed=0) == first  # reproducible
    assert measure(seed=1).groups["guide/c"].var != first.groups["guide/c"].var


class CaptureLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int, dict[str, float]]] = []

    name, version = "capture", "0"

    @property
    def experiment(self):
        return None

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def fit_toy(every_n_steps: int, estimator, baseline: bool, steps: int = 5):
    pyro.clear_param_store()
    pl.seed_everything(0)
    module = SVIModule(Toy(observe=True, baseline=baseline), estimator, partial(torch.optim.Adam, lr=0.05))
    images = torch.rand(40, 1, 2, 2)
    loader = torch.utils.data.DataLoader([{"image": x} for x in images], batch_size=8, shuffle=True)
    logger = CaptureLogger()
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=logger,
        callbacks=[GradVarianceMonitor(every_n_steps, 4)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, loader)
    optimizer_state = trainer.optimizers[0].state_dict()["state"]
    store = pyro.get_param_store()
    average = store["__baseline_avg_downstream_cost_c"].detach().clone() if baseline else torch.zeros(())
    return module, optimizer_state, average, logger.metrics, torch.rand(2)


@pytest.mark.parametrize(
    "estimator,baseline,measured",
    [
        # Steps N, 2N, ... (never step 0, where a compiled estimator would also still be compiling).
        (TraceGraphEstimator, True, [1, 2, 3, 4]),
        (JitTraceGraphEstimator, False, [1, 2, 3, 4]),
    ],
)
def test_monitored_training_equals_unmonitored_training(estimator, baseline, measured):
    monitored, opt_a, avg_a, log_a, next_a = fit_toy(1, estimator(), baseline)
    plain, opt_b, avg_b, log_b, next_b = fit_toy(0, estimator(), baseline)
    for (name, a), b in zip(monitored.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for key in opt_a:
        assert all(torch.equal(opt_a[key][s], opt_b[key][s]) for s in ("exp_avg", "exp_avg_sq"))
    assert torch.equal(avg_a, avg_b) and torch.equal(next_a, next_b)
    assert [step for step, m in log_a if "grad_var/guide/c" in m] == measured
    tags = {tag for _, m in log_a for tag in m}
    assert {"grad_var/guide/z", "grad_snr/guide/c", "grad_mean_sq_norm/guide/z"} <= tags
    assert ("grad_var_term/c" in tags) is (not estimator.compiled)  # compiled graphs keep no terms
    assert not any(tag.startswith("grad_") for _, m in log_b for tag in m)


def test_off_does_no_work(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("measured while off")

    monkeypatch.setattr("airlab.variance.monitor.gradient_variance", fail)
    # None for trainer, module and batch: touching any of them would raise.
    GradVarianceMonitor(every_n_steps=0, num_samples=16).on_train_batch_start(None, None, None, 0)


@pytest.mark.parametrize("elbo,steps", [("trace", [2, 4]), ("jit_trace", [2, 4])])
def test_tags_reach_tensorboard_through_training(make_cfg, elbo, steps):
    overrides = ["seed=0", f"elbo={elbo}", "callbacks.grad_variance.every_n_steps=2"]
    cfg = make_cfg(FAST + overrides + ["callbacks.grad_variance.num_samples=3"])
    train(cfg)
    events = read_events(f"{cfg.paths.output_dir}/tensorboard")
    for group in ("guide/encoder", "model/decoder"):
        for stat in ("grad_var", "grad_snr", "grad_mean_sq_norm"):
            values = events.Scalars(f"{stat}/{group}")
            assert [e.step for e in values] == steps
            assert all(math.isfinite(e.value) and e.value > 0 for e in values)


@pytest.mark.slow  # a subprocess: the same behaviour is tested in-process in the fast suite
def test_variance_report_script_on_the_vae(tmp_path):
    result = run_script(
        "variance_report.py", *FAST, "report.num_samples=16", "report.particles=[4]", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "variance_report").glob("*/*")
    report = json.loads((run_dir / "variance_report.json").read_text())
    # trace (K = 1) and trace_k4 form a particle series: its SNR slopes come with the report
    assert set(report) == {"estimators", "config", "snr_slopes", "snr_at_largest_k"}
    assert set(report["snr_slopes"]) == {"guide/encoder", "model/decoder"}
    assert list(report["estimators"]) == ["trace", "tracegraph", "trace_k4"]
    for entry in report["estimators"].values():
        assert set(entry) == {"groups", "terms"} and entry["terms"] == {}
        assert set(entry["groups"]) == {"guide/encoder", "model/decoder"}
        for stats in entry["groups"].values():
            assert set(stats) == {"var", "snr", "mean_sq_norm", "snr_per_dim"}
            assert all(v > 0 for v in stats.values())
    assert set(report["config"]["skipped"]) == {"tracegraph_avg", "tracegraph_nvil"}
    assert "no key model.baseline" in report["config"]["skipped"]["tracegraph_nvil"]
    trace, tracegraph, k4 = (
        report["estimators"][n]["groups"]["guide/encoder"]["var"] for n in report["estimators"]
    )
    assert tracegraph == trace  # the VAE's estimators coincide, and the draws share the seed
    assert 0.1 < k4 / trace < 0.6  # 1/4 in expectation; the range is about 95% for K = 16
    table = (run_dir / "variance_report.md").read_text()
    assert "| trace_k4 |" in table and "tracegraph_nvil: model=vae has no key model.baseline" in table
    assert (run_dir / "variance_report.png").read_bytes()[:4] == b"\x89PNG"
    events = read_events(run_dir / "tensorboard")
    assert "variance_report" in events.Tags()["images"]
    assert "variance_report/text_summary" in events.Tags()["tensors"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("report.num_samples=1", "report.num_samples: 1 is out of range; must be >= 2"),
        (
            "report.estimators.trace.elbo=nope",
            "report.estimators.trace.elbo: 'nope' is not valid; choose one of:",
        ),
        ("report.particles_of=nope", "report.particles_of: 'nope' is not one of: trace, tracegraph"),
        ("+report.estimators.trace.model=x", "report.estimators.trace.model: unknown key; valid keys:"),
    ],
)
def test_report_user_errors_name_the_key(make_cfg, override, message):
    from airlab.tasks.variance_report import run_variance_report

    with pytest.raises(ConfigError) as err:
        run_variance_report(make_cfg(FAST + [override], name="variance_report"))
    assert str(err.value).startswith(message)


def test_variance_report_from_a_checkpoint(make_cfg, tmp_path):
    from airlab.errors import CheckpointError
    from airlab.tasks.variance_report import run_variance_report

    trained = make_cfg(FAST + ["seed=0", "trainer.max_steps=2", "model.z_dim=7"], run="train")
    train(trained)
    ckpt = f"{trained.paths.output_dir}/checkpoints/last.ckpt"
    # The checkpoint's model config wins over the command line's (z_dim=50 here): the weights need it.
    overrides = ["report.num_samples=4", "report.particles=[]", "~report.estimators.tracegraph"]
    cfg = make_cfg(FAST + overrides + [f"ckpt_path={ckpt}"], name="variance_report", run="report")
    output = run_variance_report(cfg)
    assert output["config"]["ckpt_path"] == ckpt and output["config"]["global_step"] == 2
    assert output["config"]["model"]["z_dim"] == 7
    assert list(output["estimators"]) == ["trace"]
    assert (tmp_path / "report" / "variance_report.json").is_file()

    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    cfg = make_cfg(
        FAST + overrides + [f"ckpt_path={tmp_path / 'broken.ckpt'}"], name="variance_report", run="bad"
    )
    with pytest.raises(CheckpointError, match="broken.ckpt is not a readable checkpoint"):
        run_variance_report(cfg)
