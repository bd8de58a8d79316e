"""The estimator study: its files from a sweep's runs, and the script end to end (slow)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from airlab.tracking.study_report import write_study
from tests.conftest import REPO_ROOT

# arm -> seed -> [(step, seconds, accuracy)] at each validation
CURVES = {
    "tracegraph_nvil": {0: [(100, 10.0, 0.5), (200, 20.0, 0.92), (300, 30.0, 0.95)],
                        1: [(100, 11.0, 0.6), (200, 22.0, 0.8), (300, 33.0, 0.91)]},
    "trace": {0: [(100, 9.0, 0.3), (200, 18.0, 0.33), (300, 27.0, 0.35)],
              1: [(100, 9.5, 0.31), (200, 19.0, 0.32), (300, 28.5, 0.4)]},
}  # fmt: skip


def fake_sweep(root: Path) -> Path:
    """Job dirs as a sweep leaves them: overrides, TensorBoard scalars, metrics.json."""
    from torch.utils.tensorboard import SummaryWriter

    job = 0
    for arm, seeds in CURVES.items():
        for seed, points in seeds.items():
            job_dir = root / str(job)
            (job_dir / ".hydra").mkdir(parents=True)
            (job_dir / ".hydra" / "overrides.yaml").write_text(f"- study_arm={arm}\n- seed={seed}\n")
            writer = SummaryWriter(str(job_dir / "tensorboard"))
            for step, seconds, accuracy in points:
                # as Lightning and the throughput monitor log them: the metric at step - 1, time at step
                writer.add_scalar("val/count_accuracy", accuracy, step - 1)
                writer.add_scalar("val/elbo", -500.0 + step, step - 1)
                writer.add_scalar("throughput/elapsed_s", seconds, step)
            writer.close()
            (job_dir / "metrics.json").write_text(f'{{"seed": {seed}}}')
            job += 1
    return root


def test_study_files_hold_every_point_and_the_per_arm_figures(tmp_path):
    paths = write_study(fake_sweep(tmp_path), threshold=0.9, metric="val/count_accuracy")
    assert [p.name for p in paths] == ["study.csv", "study.md", "study.png"]
    rows = list(csv.DictReader(open(paths[0])))
    assert len(rows) == 12  # 2 arms x 2 seeds x 3 validations
    first = rows[0]
    assert (first["arm"], first["seed"], first["step"], first["seconds"]) == (
        "tracegraph_nvil",
        "0",
        "100",
        "10.0",
    )
    assert float(first["count_accuracy"]) == pytest.approx(0.5) and float(first["elbo"]) == pytest.approx(
        -400.0
    )
    table = paths[1].read_text().splitlines()
    nvil = next(line for line in table if line.startswith("| tracegraph_nvil "))
    trace = next(line for line in table if line.startswith("| trace "))
    # at the budget: 95% and 91% -> median 93.0%; both reached 90% (steps 200 and 300, 0.33 and 0.55 min)
    assert "93.0% (91.0%–95.0%)" in nvil and "250 (200–300); 2/2 reached" in nvil and "| 2/2 |" in nvil
    assert "0.4 (0.3–0.6)" in nvil
    assert "37.5% (35.0%–40.0%)" in trace and "0/2 reached" in trace and "| 0/2 |" in trace
    assert paths[2].stat().st_size > 10_000


@pytest.mark.slow
def test_study_script_runs_the_preset_grid_and_writes_its_files(tmp_path):
    """``scripts/study.py study=air_estimators`` with two arms, one seed and a tiny AIR."""
    sweep = tmp_path / "sweep"
    tiny = [
        "model.rnn_hidden=16",
        "model.z_what_dim=4",
        "model.encoder_hidden=[16]",
        "model.decoder_hidden=[16]",
    ]
    command = [
        sys.executable, str(REPO_ROOT / "scripts/study.py"), "study=air_estimators",
        "study_arm=tracegraph,enum_counts", "seed=0", "debug=fast", "data.source=bundled",
        "data.subset_size=256", *tiny, "trainer.max_steps=8", "trainer.val_check_interval=4",
        "trainer.limit_val_batches=2", "trainer.max_time=null", "callbacks.progress_bar=null",
        f"paths.root_dir={tmp_path}", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(sweep / "study.csv")))
    assert {r["arm"] for r in rows} == {"tracegraph", "enum_counts"} and len(rows) == 4
    assert "| enum_counts | 1 |" in (sweep / "study.md").read_text()
    assert (sweep / "study.png").is_file()
