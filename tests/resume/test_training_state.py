"""Resuming a run: ``ckpt_path=last`` finds the newest checkpoint of the task, and the state outside the
module's parameters (Pyro's param store, the annealed count prior) comes back with it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyro
import pytest
import pytorch_lightning as pl
import torch

from airlab.training.run import train
from tests.conftest import FAST, TINY_AIR_MODEL, read_events


class ResumeProbe(pl.Callback):
    """Writes probe.json in the run directory: before the first training step of the run, the global
    step, the param store entries that are no module parameter and AIR's prior buffer; after that step,
    the step it ran at and the buffer."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if "start_step" in self.seen:
            return
        module_tensors = {id(p) for p in pl_module.parameters()}
        store = pyro.get_param_store()
        self.seen["start_step"] = trainer.global_step
        self.seen["store"] = {
            name: store.get_param(name).detach().cpu().tolist()
            for name in store.keys()
            if id(store._params[name]) not in module_tensors
        }
        self.seen["prior_at_start"] = float(getattr(pl_module.model, "z_pres_prior_now", float("nan")))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "after_step" not in self.seen:
            prior = float(getattr(pl_module.model, "z_pres_prior_now", float("nan")))
            self.seen["after_step"] = [trainer.global_step - 1, prior]
            (Path(trainer.default_root_dir) / "probe.json").write_text(json.dumps(self.seen))


PROBE = "+callbacks.resume_probe._target_=tests.resume.test_training_state.ResumeProbe"


def probe(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "probe.json").read_text())


def loss_steps(run_dir: Path) -> list[int]:
    return [e.step for e in read_events(run_dir / "tensorboard").Scalars("train/loss")]


def test_ckpt_path_last_resumes_from_the_newest_last_ckpt_of_the_task(make_cfg, tmp_path):
    """Run a stops at step 2; run b (``ckpt_path=last``) resumes from a and stops at 4; run c resumes
    from b (the newest), not from a nor from a newer last.ckpt of another task, and stops at 6."""
    shared = [*FAST, "model.hidden_dim=32", "seed=0", "test=false", "trainer.max_epochs=100"]
    shared.append(f"paths.log_dir={tmp_path}/out")

    def run(name: str, steps: int, *extra: str) -> Path:
        cfg = make_cfg([*shared, f"trainer.max_steps={steps}", *extra], run=f"out/debug/{name}")
        assert cfg.task_name == "debug"
        train(cfg)
        return Path(cfg.paths.output_dir)  # now: the path interpolates the current Hydra config

    a = run("a", 2)
    b = run("b", 4, "ckpt_path=last")
    assert loss_steps(b) == [2, 3]  # it continued from a's step 2
    a_ckpt, b_ckpt = a / "checkpoints" / "last.ckpt", b / "checkpoints" / "last.ckpt"
    # A newer last.ckpt of another task is no candidate; a's is made the older of the two.
    decoy = tmp_path / "out" / "other_task" / "x" / "checkpoints" / "last.ckpt"
    decoy.parent.mkdir(parents=True)
    shutil.copy(a_ckpt, decoy)
    now = b_ckpt.stat().st_mtime
    os.utime(a_ckpt, (now - 100, now - 100))
    os.utime(decoy, (now + 100, now + 100))
    c = run("c", 6, "ckpt_path=last")
    assert loss_steps(c) == [4, 5]  # from b's step 4
    assert json.loads((c / "metrics.json").read_text())["global_step"] == 6


TINY_AIR = [
    *FAST,
    "model=air",
    "data=multimnist",
    *TINY_AIR_MODEL,
    "callbacks.grad_variance.every_n_steps=0",
    "test=false",
    "seed=0",
    "trainer.max_epochs=100",
    PROBE,
]


def test_decaying_average_baselines_come_back_on_resume(make_cfg):
    """AIR with ``elbo=tracegraph`` and decaying-average baselines keeps the running averages in Pyro's
    param store; a resumed run starts its first step with exactly the checkpoint's averages (the store
    is cleared in between, as in a new process)."""
    baseline = ["elbo=tracegraph", "model.baseline=decaying_avg"]
    first = make_cfg([*TINY_AIR, *baseline, "trainer.max_steps=2"], run="first")
    train(first)
    ckpt_path = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt_path, weights_only=False)["pyro_param_store"]
    assert saved and all("baseline" in name for name in saved), sorted(saved)
    assert any(float(v.abs().max()) > 0 for v in saved.values())  # two updates moved them off zero
    pyro.clear_param_store()
    second = make_cfg([*TINY_AIR, *baseline, "trainer.max_steps=3", f"ckpt_path={ckpt_path}"], run="second")
    train(second)
    seen = probe(second)
    assert seen["start_step"] == 2
    assert set(seen["store"]) == set(saved)
    for name, value in saved.items():
        assert torch.equal(torch.tensor(seen["store"][name], dtype=value.dtype), value), name


def test_annealed_prior_continues_from_the_resumed_step(make_cfg):
    """``z_pres_anneal=linear`` over 10 steps: a run resumed at step 3 starts with the checkpoint's
    prior (annealed to step 2, not the initial 0.01), and its first step uses ``annealed_prior(3)``."""
    anneal = ["model.z_pres_anneal=linear", "model.anneal_duration=10", "model.anneal_target=1e-5"]
    first = make_cfg([*TINY_AIR, *anneal, "trainer.max_steps=3"], run="first")
    train(first)
    ckpt_path = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    pyro.clear_param_store()
    second = make_cfg([*TINY_AIR, *anneal, "trainer.max_steps=4", f"ckpt_path={ckpt_path}"], run="second")
    train(second)

    def annealed(step: int) -> float:  # linear from 0.01 to 1e-5 over steps 0..10
        return 0.01 + (1e-5 - 0.01) * step / 10

    seen = probe(second)
    assert seen["start_step"] == 3
    assert seen["prior_at_start"] == pytest.approx(annealed(2), rel=1e-5)
    step, prior = seen["after_step"]
    assert step == 3 and prior == pytest.approx(annealed(3), rel=1e-5)
    assert abs(prior - 0.01) > 2e-3  # far from the initial value
