"""The command-line scripts as a user runs them (subprocesses: a few, since each imports torch)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script


def test_train_script_writes_the_run_layout(tmp_path):
    result = run_script(
        "train.py", "debug=fast", "data.source=bundled", "seed=0", "callbacks.progress_bar=null", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "debug").glob("*/*"))
    assert len(runs) == 1
    run_dir = runs[0]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    log = (run_dir / "train.log").read_text()
    assert "MNIST source: bundled" in log and "final metrics" in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["seed"] == 0


@pytest.mark.slow  # a subprocess: the same behaviour is tested in-process in the fast suite
def test_bad_value_is_one_line_on_stderr_and_nonzero_exit(tmp_path):
    result = run_script("train.py", "data.batch_size=-1", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["airlab error: data.batch_size: -1 is out of range; must be >= 1"], result.stderr
    assert not (tmp_path / "data").exists()  # stopped before any work
