"""Numerical faults: non-finite steps are skipped and counted, too many in a row stop the run with one
line, and gradient clipping applies to each parameter group on its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from airlab.contracts.estimator import LossOutput
from airlab.errors import report_user_errors
from airlab.estimators import TraceEstimator
from airlab.estimators.nonfinite import all_finite
from airlab.training.run import train
from tests.conftest import FAST, read_events


class InjectNaNGradient(pl.Callback):
    """The test hook: after the backward pass of the listed steps (or every step from ``from_step``),
    one gradient element becomes nan. Records the weights after every step."""

    def __init__(self, steps: list[int] | None = None, from_step: int | None = None) -> None:
        self.steps = set(steps or [])
        self.from_step = from_step
        self.weights: dict[int, torch.Tensor] = {}

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if step in self.steps or (self.from_step is not None and step >= self.from_step):
            first = next(p for p in pl_module.parameters() if p.grad is not None)
            first.grad.view(-1)[0] = float("nan")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.weights[trainer.global_step] = torch.cat([p.detach().flatten() for p in pl_module.parameters()])


class NaNLossTrace(TraceEstimator):
    """``trace`` whose loss is nan at the listed calls (counting from 0): a non-finite loss."""

    def __init__(self, nan_calls: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_calls, self.calls = set(nan_calls), 0

    def __call__(self, *args: Any, **kwargs: Any) -> LossOutput:
        out = super().__call__(*args, **kwargs)
        self.calls += 1
        if self.calls - 1 in self.nan_calls:
            nan = torch.tensor(float("nan"))
            return LossOutput(out.loss + nan, out.surrogate + nan, out.baseline_loss, out.guide_trace)
        return out


def fit(make_cfg: Any, monkeypatch: Any, overrides: list[str], hook: pl.Callback | None = None) -> Any:
    """Train through the task, with ``hook`` added to the config's callbacks; returns the config."""
    import airlab.training.build

    if hook is not None:
        build_group = airlab.training.build.instantiate_group

        def with_hook(group: Any) -> list[Any]:
            built = build_group(group)
            return [*built, hook] if any(isinstance(b, pl.Callback) for b in built) else built

        monkeypatch.setattr(airlab.training.build, "instantiate_group", with_hook)
    cfg = make_cfg([*FAST, "trainer.max_epochs=100", "seed=0", *overrides])
    train(cfg)
    return cfg


def metrics_of(cfg: Any) -> dict[str, Any]:
    return json.loads(open(f"{cfg.paths.output_dir}/metrics.json").read())


def test_all_finite_sees_nan_and_inf():
    assert all_finite([torch.ones(3), torch.zeros(2)]) and all_finite([])
    assert not all_finite([torch.ones(3), torch.tensor([1.0, float("nan")])])
    assert not all_finite([torch.tensor([float("-inf")])])


def test_nan_gradients_are_skipped_counted_and_leave_the_weights(make_cfg, monkeypatch, caplog):
    hook = InjectNaNGradient(steps=[2, 3])
    cfg = fit(make_cfg, monkeypatch, ["trainer.max_steps=6"], hook)
    metrics = metrics_of(cfg)
    assert metrics["global_step"] == 6  # a skipped step still counts as a step
    weights = hook.weights
    assert torch.equal(weights[3], weights[2]) and torch.equal(weights[4], weights[2])  # steps 2, 3 skipped
    assert not torch.equal(weights[2], weights[1]) and not torch.equal(weights[5], weights[4])
    assert torch.isfinite(weights[6]).all()
    skipped = read_events(f"{cfg.paths.output_dir}/tensorboard").Scalars("train/skipped_steps")
    assert [e.value for e in skipped][-1] == 2.0
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("step 2: non-finite loss or gradient")


def test_a_nan_loss_is_skipped_and_not_logged(make_cfg, monkeypatch):
    cfg = fit(
        make_cfg,
        monkeypatch,
        [
            "trainer.max_steps=5",
            "elbo._target_=tests.estimators.test_nonfinite.NaNLossTrace",
            "+elbo.nan_calls=[1]",
        ],
    )
    metrics = metrics_of(cfg)
    assert metrics["global_step"] == 5 and all(v == v for v in metrics.values() if isinstance(v, float))
    events = read_events(f"{cfg.paths.output_dir}/tensorboard")
    assert [e.value for e in events.Scalars("train/skipped_steps")][-1] == 1.0
    assert all(e.value == e.value for e in events.Scalars("train/loss"))  # no nan logged


def test_consecutive_nan_steps_stop_the_run_with_one_line(make_cfg, monkeypatch, capsys):
    hook = InjectNaNGradient(from_step=2)
    with pytest.raises(SystemExit) as exit_info:
        report_user_errors(
            fit, make_cfg, monkeypatch, ["trainer.max_steps=50", "max_consecutive_bad=3"], hook
        )
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    line = lines[0]
    assert line.startswith("airlab error: training stopped at step 4: 3 steps in a row")
    assert (
        "max_consecutive_bad=3" in line
        and "the last finite loss was " in line
        and "nats per image at step 4" in line
    )  # the loss stayed finite
    # steps 2 and 3 ran, skipped (their weights recorded as steps 3 and 4); the third bad one stopped the run
    assert max(hook.weights) == 4 and torch.equal(hook.weights[4], hook.weights[2])


def test_gradient_clipping_is_per_parameter_group():
    """The baseline group's huge gradient is clipped on its own and leaves the model's alone."""
    from airlab.models.vae import VAE
    from airlab.training.svi_module import SVIModule

    class WithBaseline(VAE):
        def __init__(self) -> None:
            super().__init__(z_dim=2, hidden_dim=3)
            self.baseline_net = torch.nn.Linear(2, 1)

        def baseline_parameters(self):  # noqa: ANN201
            return iter(self.baseline_net.parameters())

    module = SVIModule(WithBaseline(), TraceEstimator(), optimizer=torch.optim.SGD, baseline_lr=0.1)
    optimizer = module.optimizer_factory(module.parameter_groups(), lr=1e-3)
    main, baseline = (group["params"] for group in optimizer.param_groups)
    for p in main:
        p.grad = torch.full_like(p, 1e-3)
    for p in baseline:
        p.grad = torch.full_like(p, 1e5)
    main_before = [p.grad.clone() for p in main]
    module.configure_gradient_clipping(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    norm = lambda ps: float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ps])))  # noqa: E731
    assert norm(baseline) == pytest.approx(1.0, rel=1e-4)
    assert all(torch.equal(p.grad, g) for p, g in zip(main, main_before, strict=True))
    assert norm(main) < 1.0


def test_a_non_finite_model_is_never_saved_as_the_best_checkpoint(make_cfg, monkeypatch, caplog):
    """val/elbo is nan at every validation: last.ckpt records the run, but no best checkpoint is kept."""
    import airlab.training.svi_module

    monkeypatch.setattr(airlab.training.svi_module, "elbo_estimate", lambda *args: torch.tensor(float("nan")))
    cfg = fit(make_cfg, monkeypatch, ["trainer.max_steps=4", "callbacks.model_checkpoint.every_n_epochs=1"])
    saved = sorted(p.name for p in Path(cfg.paths.output_dir, "checkpoints").iterdir())
    assert saved == ["last.ckpt"]
    assert "val/elbo=nan is not finite; not saved as a best checkpoint" in caplog.text
