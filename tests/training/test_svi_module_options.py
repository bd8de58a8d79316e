"""Training options that had no test of their own: the N/B loss scale, the optimizers other than Adam,
and the hparams summary written to TensorBoard at the end of a run."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pyro
import pytest
import pytorch_lightning as pl
import torch

from airlab.estimators import TraceEstimator
from airlab.models.vae import VAE
from airlab.training.run import train
from airlab.training.svi_module import SVIModule
from tests.conftest import FAST, read_events

# -- the N/B loss scale ------------------------------------------------------------------------------


def module_step(scale_to_dataset: bool, num_train: int | None, images: torch.Tensor, state=None):
    """One training_step of a tiny VAE: (module, surrogate, logged values, gradients)."""
    torch.manual_seed(0)
    model = VAE(z_dim=2, hidden_dim=8, scale_to_dataset=scale_to_dataset)
    if state is not None:
        model.load_state_dict(state)
    module = SVIModule(model, TraceEstimator(), partial(torch.optim.Adam, lr=1e-3), num_train=num_train)
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kwargs: logged.setdefault(name, float(value))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    surrogate = module.training_step({"image": images}, 0)
    grads = torch.autograd.grad(surrogate, list(model.parameters()))
    return module, surrogate, logged, grads


def test_loss_scale_multiplies_the_surrogate_but_train_loss_stays_per_image():
    """With ``scale_to_dataset`` the surrogate (and so the gradient) is N/B times the unscaled one on
    the same draws, while ``train/loss`` is the loss per image either way."""
    # Fixed images: on about 1 draw in 30 one gradient element misses atol=1e-4 (float32 round-off at 100x).
    images = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    scaled, surrogate, logged, grads = module_step(True, 1000, images)
    assert scaled.loss_scale(10) == 100.0 and scaled.loss_scale(8) == 125.0
    state = scaled.model.state_dict()
    plain, plain_surrogate, plain_logged, plain_grads = module_step(False, 1000, images, state)
    assert plain.loss_scale(10) == 1.0
    assert module_step(True, None, images, state)[0].loss_scale(10) == 1.0  # no N known: no scale
    assert float(surrogate) == pytest.approx(100 * float(plain_surrogate), rel=1e-5)
    for g, p in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, 100 * p, rtol=1e-4, atol=1e-4)
    # train/loss: the same number per image, about 544 nats for an untrained VAE on 784 pixels.
    assert logged["train/loss"] == pytest.approx(plain_logged["train/loss"], rel=1e-5)
    assert logged["train/loss"] == pytest.approx(float(plain_surrogate) / 10, rel=1e-4)
    assert 300 < logged["train/loss"] < 800
    assert logged["train/elbo"] == pytest.approx(-logged["train/loss"])


# -- ClippedAdam and RMSprop ---------------------------------------------------------------------------


class WeightProbe(pl.Callback):
    """Writes weights.json in the run directory: the optimizer's class and its first param group's
    options, and for every module parameter the largest absolute change over the run."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {name: p.detach().clone() for name, p in pl_module.named_parameters()}

    def on_train_end(self, trainer, pl_module) -> None:
        [optimizer] = trainer.optimizers
        group = {k: v for k, v in optimizer.param_groups[0].items() if isinstance(v, int | float | str)}
        changes = {
            name: float((p.detach() - self.start[name]).abs().max())
            for name, p in pl_module.named_parameters()
        }
        report = {"optimizer": type(optimizer).__name__, "group": group, "changes": changes}
        (Path(trainer.default_root_dir) / "weights.json").write_text(json.dumps(report))


@pytest.mark.parametrize(
    "option,name,own_option",
    [("clipped_adam", "ClippedAdam", ("clip_norm", 10.0)), ("rmsprop", "RMSprop", ("alpha", 0.99))],
)
def test_clipped_adam_and_rmsprop_train_the_model(make_cfg, option, name, own_option):
    """``optim=clipped_adam`` / ``optim=rmsprop`` build that optimizer (with its own options) and its
    steps move every parameter of the VAE, with finite losses."""
    probe = "+callbacks.weight_probe._target_=tests.training.test_svi_module_options.WeightProbe"
    cfg = make_cfg(
        [
            *FAST,
            f"optim={option}",
            "model.hidden_dim=32",
            "trainer.max_steps=3",
            "test=false",
            "seed=0",
            probe,
        ]
    )
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    report = json.loads((run_dir / "weights.json").read_text())
    assert report["optimizer"] == name
    key, value = own_option
    assert report["group"][key] == value and report["group"]["lr"] == cfg.optim.lr
    unchanged = [n for n, change in report["changes"].items() if change == 0.0]
    assert not unchanged and len(report["changes"]) >= 8, unchanged  # every weight and bias moved
    losses = [e.value for e in read_events(run_dir / "tensorboard").Scalars("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(v) and 0 < v < 800 for v in losses)


# -- the hparams summary ---------------------------------------------------------------------------------


def test_hparams_summary_holds_the_flattened_config_and_the_final_metrics(make_cfg):
    """The end-of-run hparams summary: the session's hparams are the resolved config flattened to
    dotted keys (lists and null as strings), and the experiment lists every final metric with a "/"."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = make_cfg([*FAST, "model.hidden_dim=32", "trainer.max_steps=3", "seed=7"])  # 3: one epoch
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    events = read_events(run_dir / "tensorboard")
    content = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(
        content
    )

    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.z_dim"].number_value == 50 and hparams["model.hidden_dim"].number_value == 32
    assert hparams["optim.lr"].number_value == pytest.approx(1e-3)
    assert hparams["seed"].number_value == 7 and hparams["task_name"].string_value == "debug"
    assert hparams["model._target_"].string_value == "airlab.models.vae.VAE"
    assert hparams["optim.betas"].string_value == "[0.9, 0.999]"  # a list, as a string
    assert hparams["trainer.max_steps"].number_value == 3
    assert "hydra" not in {key.split(".")[0] for key in hparams}

    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {info.name.tag for info in experiment.metric_infos}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metric_tags == {key for key in metrics if "/" in key}
    assert {"val/elbo", "test/elbo", "train/elbo"} <= metric_tags and "global_step" not in metric_tags
    # The final values sit beside them as scalars of the same tags.
    assert events.Scalars("test/elbo")[-1].value == pytest.approx(metrics["test/elbo"], abs=1e-4)
