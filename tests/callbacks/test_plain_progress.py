"""Progress as plain log lines when stdout is no terminal (Slurm, nohup, a redirected log)."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest

from airlab.callbacks import plain_progress
from airlab.callbacks.plain_progress import PlainProgress, TerminalProgressBar, format_duration
from airlab.training.run import train
from tests.conftest import FAST

LINE = re.compile(
    r"^step (\d+)/6 \(epoch \d+\) \| loss \d+\.\d\d \| elbo -\d+\.\d\d"
    r" \| \d+\.\d\d steps/s \| ETA \d+:\d\d:\d\d$"
)


def test_a_redirected_run_logs_step_loss_elbo_rate_and_eta(make_cfg, caplog, monkeypatch):
    monkeypatch.setattr(plain_progress, "output_is_terminal", lambda: False)
    cfg = make_cfg([*FAST, "callbacks.plain_progress.every_n_steps=2", "test=false", "logger=csv"])
    # the default progress bar, which switches itself off when stdout is no terminal
    cfg.callbacks.progress_bar = {"_target_": "airlab.callbacks.plain_progress.TerminalProgressBar"}
    with caplog.at_level(logging.INFO, logger=plain_progress.__name__):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == plain_progress.__name__]
    steps = [int(m.group(1)) for m in map(LINE.match, lines) if m]
    assert steps == [2, 4, 6], lines
    assert lines[0] == "training from step 0 to 6"
    assert any(line.startswith("validation at step ") and "val/elbo -" in line for line in lines), lines


def test_on_a_terminal_the_lines_are_silent_and_the_rich_bar_stays(monkeypatch):
    monkeypatch.setattr(plain_progress, "output_is_terminal", lambda: True)
    assert not PlainProgress().active and PlainProgress(when="always").active
    monkeypatch.setattr(plain_progress, "output_is_terminal", lambda: False)
    assert PlainProgress().active and not PlainProgress(when="never").active


@pytest.mark.parametrize("terminal", [True, False])
def test_the_rich_bar_is_off_when_stdout_is_no_terminal(monkeypatch, terminal):
    monkeypatch.setattr(plain_progress, "output_is_terminal", lambda: terminal)
    bar = TerminalProgressBar()
    bar.setup(trainer=SimpleNamespace(is_global_zero=True), pl_module=None, stage="fit")
    assert bar.is_enabled is terminal


def test_durations_read_as_clock_times():
    assert format_duration(3725.2) == "1:02:05"
    assert format_duration(float("inf")) == "?"


def test_the_eta_counts_down_to_max_time_when_that_ends_the_run_first(make_cfg, caplog, monkeypatch):
    """max_steps a million away, max_time 10 minutes: the ETA is the time left on the clock."""
    monkeypatch.setattr(plain_progress, "output_is_terminal", lambda: False)
    overrides = ["callbacks.plain_progress.every_n_steps=2", "test=false", "logger=csv"]
    cfg = make_cfg(
        [
            *FAST,
            *overrides,
            "trainer.max_steps=1000000",
            "trainer.max_epochs=1",
            "trainer.max_time=00:00:10:00",
        ]
    )
    with caplog.at_level(logging.INFO, logger=plain_progress.__name__):
        train(cfg)
    etas = [r.getMessage().rsplit("ETA ", 1)[1] for r in caplog.records if "| ETA " in r.getMessage()]
    assert etas and all(eta.startswith("0:09:") or eta.startswith("0:10:") for eta in etas), etas
