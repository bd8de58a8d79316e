"""Training end to end through the task function: curves, pictures, checkpoints, resume, seeds."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from airlab.errors import ConfigError
from airlab.training.run import train
from tests.conftest import FAST, read_events


def run(make_cfg, overrides, run_name="run"):
    cfg = make_cfg(FAST + overrides, run=run_name)
    train(cfg)
    return cfg


def test_short_training_lowers_the_loss_and_logs_the_tags(make_cfg):
    cfg = run(
        make_cfg,
        [
            "trainer.max_steps=40",
            "trainer.max_epochs=10",
            "data.subset_size=640",
            "callbacks.reconstructions.every_n_epochs=1",
        ],
    )
    run_dir = cfg.paths.output_dir
    events = read_events(f"{run_dir}/tensorboard")
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/elbo", "val/elbo", "test/elbo", "throughput/steps_per_s"} <= scalars
    assert {"val/reconstructions", "val/samples"} <= set(events.Tags()["images"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert "custom_scalars__config__" in events.Tags()["tensors"]
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 50  # nats per image: it learns
    recon = events.Images("val/reconstructions")[-1]
    # 16 inputs above 16 reconstructions, enlarged picture_scale=2 times as evaluate's PNGs are
    assert recon.width > 2 * 16 * 28 and recon.height > 2 * 2 * 28

    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    assert metrics["global_step"] == 40
    assert {"val/elbo", "test/elbo", "wall_time_s", "throughput/mean_steps_per_s", "seed"} <= set(metrics)
    # the training loop sits inside trainer.fit, which sits inside the whole task
    assert 0 < metrics["throughput/loop_time_s"] <= metrics["fit_time_s"] <= metrics["wall_time_s"]
    # metrics.json holds what was logged, not a callback's internals
    for tag in ("throughput/loop_time_s", "throughput/mean_steps_per_s", "train/elbo"):
        assert metrics[tag] == pytest.approx(events.Scalars(tag)[-1].value, rel=1e-6)
    assert -700 < metrics["val/elbo"] < 0 and metrics["val/elbo"] == pytest.approx(
        events.Scalars("val/elbo")[-1].value, abs=1e-4
    )
    assert (Path(run_dir) / "checkpoints" / "last.ckpt").is_file()


def test_resume_continues_the_step_count_and_optimizer(make_cfg):
    first = run(make_cfg, ["trainer.max_steps=4", "trainer.max_epochs=100", "seed=0"], run_name="first")
    last = f"{first.paths.output_dir}/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4
    second = run(
        make_cfg, ["trainer.max_steps=8", "trainer.max_epochs=100", "seed=0", f"ckpt_path={last}"], "second"
    )
    metrics = json.loads(open(f"{second.paths.output_dir}/metrics.json").read())
    assert metrics["global_step"] == 8
    resumed = torch.load(f"{second.paths.output_dir}/checkpoints/last.ckpt", weights_only=False)
    adam_steps = {float(s["step"]) for s in resumed["optimizer_states"][0]["state"].values()}
    assert adam_steps == {8.0}  # Adam's moments came back from the first run
    steps = [e.step for e in read_events(f"{second.paths.output_dir}/tensorboard").Scalars("train/loss")]
    assert min(steps) >= 4
    assert resumed["airlab_config"]["model"]["z_dim"] == 50


def test_same_seed_same_run(make_cfg):
    a = run(make_cfg, ["seed=0", "trainer.max_steps=3"], run_name="a")
    b = run(make_cfg, ["seed=0", "trainer.max_steps=3"], run_name="b")
    ma = json.loads(open(f"{a.paths.output_dir}/metrics.json").read())
    mb = json.loads(open(f"{b.paths.output_dir}/metrics.json").read())
    assert ma["seed"] == mb["seed"] == 0
    assert ma["val/elbo"] == pytest.approx(mb["val/elbo"], abs=1e-5)


def test_null_seed_is_drawn_and_recorded(make_cfg):
    cfg = run(make_cfg, ["trainer.max_steps=1"])
    metrics = json.loads(open(f"{cfg.paths.output_dir}/metrics.json").read())
    assert isinstance(metrics["seed"], int) and metrics["seed"] >= 0


def test_throughput_null_means_no_monitor_and_no_throughput_metrics(make_cfg):
    """callbacks.throughput=null is honoured: the task adds no monitor of its own."""
    cfg = run(make_cfg, ["trainer.max_steps=2", "callbacks.throughput=null"])
    metrics = json.loads(open(f"{cfg.paths.output_dir}/metrics.json").read())
    assert metrics["global_step"] == 2 and "test/elbo" in metrics
    assert not [key for key in metrics if key.startswith("throughput/")]


def test_gradient_clipping_is_applied(make_cfg, monkeypatch):
    norms: list[float] = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            loss = closure()
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            super().step()
            return loss

    import airlab.training.build as build_module_file

    monkeypatch.setattr(build_module_file, "build_optimizer", lambda cfg: partial(RecordingSGD, lr=1e-3))
    run(make_cfg, ["trainer.max_steps=3", "trainer.gradient_clip_val=0.5"])
    assert len(norms) == 3 and max(norms) <= 0.5 + 1e-4


def test_baseline_parameters_get_their_own_learning_rate():
    from airlab.estimators import TraceEstimator
    from airlab.models.vae import VAE
    from airlab.training.svi_module import SVIModule

    class WithBaseline(VAE):
        def __init__(self):
            super().__init__(z_dim=2, hidden_dim=3)
            self.baseline_net = torch.nn.Linear(2, 1)

        def baseline_parameters(self):
            return iter(self.baseline_net.parameters())

    module = SVIModule(WithBaseline(), TraceEstimator(), partial(torch.optim.Adam, lr=1e-4), baseline_lr=0.1)
    optimizer = module.configure_optimizers()
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["main"]["lr"] == 1e-4 and by_name["baseline"]["lr"] == 0.1
    assert len(by_name["baseline"]["params"]) == 2
    assert not {id(p) for p in by_name["baseline"]["params"]} & {id(p) for p in by_name["main"]["params"]}


def test_iwae_training_logs_the_bound_beside_the_elbo(make_cfg):
    cfg = run(make_cfg, ["elbo=iwae", "elbo.num_particles=8", "trainer.max_steps=3"])
    metrics = json.loads(open(f"{cfg.paths.output_dir}/metrics.json").read())
    assert {"val/iwae", "val/elbo", "test/iwae"} <= set(metrics)
    assert metrics["val/iwae"] > metrics["val/elbo"]  # K=8 samples tighten the bound (nats per image)


def test_a_learning_rate_schedule_steps_per_optimizer_step_and_resumes(make_cfg):
    schedule = ["scheduler=multistep", "scheduler.milestones=[2,6]", "scheduler.gamma=0.5", "optim.lr=1e-3"]
    common = ["trainer.max_epochs=100", "seed=0", *schedule]
    first = run(make_cfg, ["trainer.max_steps=4", *common], run_name="first")
    last = f"{first.paths.output_dir}/checkpoints/last.ckpt"
    saved = torch.load(last, weights_only=True)  # a schedule's state keeps the file safe to open
    assert saved["lr_schedulers"][0]["last_epoch"] == 4  # counted in steps, not epochs
    assert saved["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(5e-4)
    second = run(make_cfg, ["trainer.max_steps=8", f"ckpt_path={last}", *common], run_name="second")
    resumed = torch.load(f"{second.paths.output_dir}/checkpoints/last.ckpt", weights_only=True)
    assert resumed["lr_schedulers"][0]["last_epoch"] == 8
    assert resumed["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(2.5e-4)
    rates = read_events(f"{second.paths.output_dir}/tensorboard").Scalars("lr-Adam/main")
    assert {e.step: round(e.value, 8) for e in rates}[7] == pytest.approx(2.5e-4)
    with pytest.raises(ConfigError, match="scheduler: .* schedule torch.optim.lr_scheduler.MultiStepLR"):
        run(
            make_cfg,
            ["trainer.max_steps=8", "trainer.max_epochs=100", "seed=0", f"ckpt_path={last}"],
            "third",
        )
