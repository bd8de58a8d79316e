"""Resuming in place (``resume_in_place=true``): the resumed run continues the checkpoint's own run folder,
with one TensorBoard curve (no step twice, also when the first run logged past its last checkpoint),
``metrics.json`` rewritten, the same MLflow run and the CSV rows kept; a checkpoint of another folder is
refused in one line that says which ``hydra.run.dir`` to pass."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

import airlab.config.validate
from airlab.errors import ConfigError
from airlab.training.run import train
from tests.conftest import FAST, read_events

# A small VAE without the run-end t-SNE and with one validation batch: 40 + 40 steps in a few seconds.
SHARED = [
    *FAST,
    "model.hidden_dim=32",
    "model.z_dim=8",
    "callbacks.latent_tsne.enabled=false",
    "trainer.limit_val_batches=1",
    "seed=0",
    "test=false",
    "trainer.max_epochs=100",
]


@pytest.fixture(autouse=True)
def declared_key(monkeypatch):
    """``resume_in_place`` as airlab/config/validate.py's TOP_LEVEL declares it (harmless once it does)."""
    monkeypatch.setitem(airlab.config.validate.TOP_LEVEL, "resume_in_place", bool)


def loss_steps(run_dir: Path) -> list[int]:
    return [event.step for event in read_events(run_dir / "tensorboard").Scalars("train/loss")]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_a_run_resumed_in_place_continues_its_folder_with_one_curve(make_cfg):
    """40 steps into R, then 80 resumed in place: R's events (two files) hold steps 0..79 once each."""
    first = make_cfg([*SHARED, "trainer.max_steps=40"], run="R")
    train(first)
    run_dir = Path(first.paths.output_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    second = make_cfg([*SHARED, "trainer.max_steps=80", f"ckpt_path={ckpt}", "resume_in_place=true"], run="R")
    train(second)
    assert Path(second.paths.output_dir) == run_dir
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) >= 2
    steps = loss_steps(run_dir)
    assert [s for s, n in Counter(steps).items() if n > 1] == []
    assert steps == list(range(80))
    assert metrics(run_dir)["global_step"] == 80
    assert [p.parent.name for p in (run_dir.parent).glob("*/metrics.json")] == ["R"]  # no other folder


def test_events_logged_after_the_checkpoint_are_purged(make_cfg):
    """A first run that logged past its last save (steps 10..19, checkpoint at 10), resumed in place from
    that save to 30: TensorBoard shows steps 0..29 once each, the later ones from the resumed run."""
    first = make_cfg([*SHARED, "trainer.max_steps=10"], run="R")
    train(first)
    run_dir = Path(first.paths.output_dir)
    at_10 = run_dir / "checkpoints" / "at10.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", at_10)
    last = run_dir / "checkpoints" / "last.ckpt"
    train(make_cfg([*SHARED, "trainer.max_steps=20", f"ckpt_path={last}", "resume_in_place=true"], run="R"))
    before = {e.step: e.value for e in read_events(run_dir / "tensorboard").Scalars("train/loss")}
    assert sorted(before) == list(range(20))
    # The state of step 10 as if the run had been killed after logging step 19 (the file is a copy).
    third = make_cfg([*SHARED, "trainer.max_steps=30", f"ckpt_path={at_10}", "resume_in_place=true"], run="R")
    train(third)
    events = read_events(run_dir / "tensorboard").Scalars("train/loss")
    assert [e.step for e in events] == list(range(30))
    # Steps 10..19 are the resumed run's, retrained from the same state: same data, same draws.
    assert [e.value for e in events[10:20]] == pytest.approx([before[s] for s in range(10, 20)], rel=1e-5)
    assert metrics(run_dir)["global_step"] == 30


def test_ckpt_path_last_with_resume_in_place_takes_this_folders_own_checkpoint(make_cfg, tmp_path):
    """``ckpt_path=last resume_in_place=true`` in R resumes R's own last.ckpt, even with a newer one of
    the same task elsewhere; without ``resume_in_place`` the newest other one is taken (as before)."""
    shared = [*SHARED, f"paths.log_dir={tmp_path}/out"]
    train(make_cfg([*shared, "trainer.max_steps=2"], run="out/debug/a"))
    train(make_cfg([*shared, "trainer.max_steps=4"], run="out/debug/b"))
    a, b = tmp_path / "out" / "debug" / "a", tmp_path / "out" / "debug" / "b"
    newest = b / "checkpoints" / "last.ckpt"
    assert newest.stat().st_mtime >= (a / "checkpoints" / "last.ckpt").stat().st_mtime
    resume = ["trainer.max_steps=5", "ckpt_path=last", "resume_in_place=true"]
    train(make_cfg([*shared, *resume], run="out/debug/a"))
    assert loss_steps(a) == [0, 1, 2, 3, 4]  # a's curve, continued from its own step 2
    assert metrics(a)["global_step"] == 5


def test_a_checkpoint_of_another_folder_is_refused_naming_the_run_dir_to_pass(make_cfg):
    first = make_cfg([*SHARED, "trainer.max_steps=2"], run="R")
    train(first)
    run_dir = Path(first.paths.output_dir).resolve()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    other = make_cfg([*SHARED, "trainer.max_steps=4", f"ckpt_path={ckpt}", "resume_in_place=true"], run="S")
    with pytest.raises(ConfigError, match=rf"resume_in_place: .* pass hydra.run.dir={run_dir} to continue"):
        train(other)
    assert not (Path(other.paths.output_dir) / "checkpoints").exists()  # refused before any work
    with pytest.raises(ConfigError, match=r"resume_in_place: needs ckpt_path="):
        train(make_cfg([*SHARED, "resume_in_place=true"], run="T"))
    loose = run_dir.parent / "loose.ckpt"
    shutil.copy(ckpt, loose)
    loose_resume = ["trainer.max_steps=4", f"ckpt_path={loose}", "resume_in_place=true"]
    with pytest.raises(ConfigError, match=r"is not in a run folder's checkpoints/"):
        train(make_cfg([*SHARED, *loose_resume], run="U"))


def test_without_resume_in_place_a_resume_goes_to_a_new_folder(make_cfg):
    """The default: the resumed run writes its own folder and leaves the first one as it was."""
    first = make_cfg([*SHARED, "trainer.max_steps=2"], run="R")
    train(first)
    run_dir = Path(first.paths.output_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    second = make_cfg([*SHARED, "trainer.max_steps=4", f"ckpt_path={ckpt}"], run="S")
    train(second)
    assert loss_steps(Path(second.paths.output_dir)) == [2, 3]
    assert loss_steps(run_dir) == [0, 1] and metrics(run_dir)["global_step"] == 2


def mlflow_runs(run_dir: Path) -> tuple:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir}/outputs/mlflow.db")
    return client, client.search_runs([client.get_experiment_by_name("debug").experiment_id])


def test_mlflow_and_csv_continue_the_run_resumed_in_place(make_cfg):
    """logger=many: one MLflow run (the id kept in mlflow_runs.json) with train/loss at steps 0..7 once
    each and its first params; metrics.csv keeps the first run's rows and adds the resumed ones."""
    first = make_cfg([*SHARED, "logger=many", "trainer.max_steps=4"], run="R")
    train(first)
    run_dir = Path(first.paths.output_dir)
    (run_id,) = json.loads((run_dir / "mlflow_runs.json").read_text()).values()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    overrides = ["logger=many", "trainer.max_steps=8", f"ckpt_path={ckpt}", "resume_in_place=true"]
    train(make_cfg([*SHARED, *overrides], run="R"))
    client, runs = mlflow_runs(run_dir)
    assert [run.info.run_id for run in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(range(8))
    assert runs[0].data.params["trainer.max_steps"] == "4"  # MLflow keeps a param's first value
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        loss_rows = [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]
    assert loss_rows == list(range(8))
    assert loss_steps(run_dir) == list(range(8)) and metrics(run_dir)["global_step"] == 8


def test_a_saved_mlflow_run_missing_from_the_store_starts_a_new_run(make_cfg):
    first = make_cfg([*SHARED, "logger=mlflow", "trainer.max_steps=2"], run="R")
    train(first)
    run_dir = Path(first.paths.output_dir)
    (run_dir / "mlflow_runs.json").write_text(json.dumps({"mlflow": "0123456789abcdef0123456789abcdef"}))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    overrides = ["logger=mlflow", "trainer.max_steps=4", f"ckpt_path={ckpt}", "resume_in_place=true"]
    train(make_cfg([*SHARED, *overrides], run="R"))
    _, runs = mlflow_runs(run_dir)
    assert len(runs) == 2
    saved = json.loads((run_dir / "mlflow_runs.json").read_text())["mlflow"]
    assert saved in {run.info.run_id for run in runs}
