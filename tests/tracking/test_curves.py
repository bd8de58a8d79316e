"""Learning curves read back from a run directory: pairing, thresholds, table and plot."""

from __future__ import annotations

import json

from torch.utils.tensorboard import SummaryWriter

from airlab.tracking.curves import main, markdown_table, read_curve


def fake_run(run_dir, accuracies, seconds_per_check=30.0):
    """Events as a training run writes them: accuracy at step - 1, elapsed time at the step."""
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for i, accuracy in enumerate(accuracies, start=1):
        writer.add_scalar("val/count_accuracy", accuracy, 500 * i - 1)
        writer.add_scalar("throughput/elapsed_s", seconds_per_check * i, 500 * i)
    writer.close()
    final = {"seed": 3, "global_step": 500 * len(accuracies), "val/count_accuracy": accuracies[-1]}
    (run_dir / "metrics.json").write_text(json.dumps({**final, "val/elbo": 561.25}))


def test_read_curve_pairs_each_validation_with_its_time(tmp_path):
    fake_run(tmp_path, [0.5, 0.91, 0.94, 0.96])
    curve = read_curve(tmp_path, "val/count_accuracy")
    assert [(p.step, p.elapsed_s) for p in curve.points] == [(500, 30), (1000, 60), (1500, 90), (2000, 120)]
    assert curve.first_reaching(0.9).step == 1000
    assert curve.first_reaching(0.95).elapsed_s == 120
    assert curve.first_reaching(0.99) is None
    table = markdown_table([curve])
    assert "| 3 | 1,000 (1.0 min) | 2,000 (2.0 min) | 96.0% | 2,000 | 561.2 | - |" in table


def test_main_writes_the_plot(tmp_path, capsys):
    fake_run(tmp_path / "a", [0.2, 0.6])
    out = tmp_path / "curves.png"
    main([str(tmp_path / "a"), "--out", str(out)])
    assert out.stat().st_size > 1000
    assert "not reached" in capsys.readouterr().out
