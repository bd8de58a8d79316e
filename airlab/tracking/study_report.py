"""The estimator study's outputs: every run's validation curve gathered into ``study.csv``, a table per
arm (``study.md``) and a picture (``study.png``), written at the sweep root when the multirun ends.

An arm is an option of ``configs/study_arm/`` (an estimator and its baseline); a run is one arm with one
seed, one job of the sweep. A run's curve is its ``study.metric`` (the AIR study: its count accuracy)
and ``val/elbo`` at every validation, with the wall-clock time since training began
(``throughput/elapsed_s``).
"""

from __future__ import annotations

import csv
import logging
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from airlab.tracking.curves import CurvePoint, RunCurve, read_curve, read_scalars
from airlab.tracking.sweep import saved_overrides
from airlab.utils.atomic import atomic_open, atomic_write_text

log = logging.getLogger(__name__)

ELBO = "val/elbo"


def metric_name(metric: str) -> str:
    """``val/elbo`` -> ``elbo``: the column and the label of a study's metric."""
    return metric.split("/", 1)[-1]


@dataclass
class StudyRun:
    """One job: its arm, its seed and its curve."""

    arm: str
    seed: int | None
    job: int
    curve: RunCurve
    elbo: dict[int, float]  # val/elbo by the step of the validation


def job_overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line overrides (``.hydra/overrides.yaml``) as ``key -> value``."""
    return dict(line.split("=", 1) for line in saved_overrides(job_dir) or [] if "=" in line)


def read_study(sweep_dir: Path, metric: str) -> list[StudyRun]:
    """Every finished-or-not job of the sweep that has TensorBoard events, in job order."""
    runs = []
    for job_dir in sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        if not (job_dir / "tensorboard").is_dir():
            continue
        overrides = job_overrides(job_dir)
        curve = read_curve(job_dir, metric)
        elbo = {step + 1: value for step, value in read_scalars(job_dir, (ELBO,))[ELBO]}
        seed = overrides.get("seed")
        runs.append(
            StudyRun(
                overrides.get("study_arm", "default"),
                int(seed) if seed is not None else curve.seed,
                int(job_dir.name),
                curve,
                elbo,
            )
        )
    return runs


def write_csv(runs: list[StudyRun], path: Path) -> None:
    """``study.csv``: one row per run per validation point."""
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        name = metric_name(runs[0].curve.metric) if runs else "metric"
        writer.writerow(("arm", "seed", "job", "step", "seconds", name, "elbo"))
        for run in runs:
            for point in run.curve.points:
                elbo = run.elbo.get(point.step)
                writer.writerow(
                    [run.arm, run.seed, run.job, point.step, round(point.elapsed_s, 2), round(point.value, 5)]
                    + [round(elbo, 3) if elbo is not None else ""]
                )


def _median_range(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def arm_rows(runs: list[StudyRun], threshold: float) -> list[dict[str, Any]]:
    """Per arm, in the order the arms first appear: the figures of ``study.md``."""
    by_arm: dict[str, list[StudyRun]] = defaultdict(list)
    for run in runs:
        by_arm[run.arm].append(run)
    rows = []
    for arm, members in by_arm.items():
        final = [r.curve.points[-1].value for r in members if r.curve.points]
        reached = [r.curve.first_reaching(threshold) for r in members]
        hit = [p for p in reached if p is not None]
        rows.append(
            {
                "arm": arm,
                "runs": len(members),
                "accuracy": final,
                "steps_to": [p.step for p in hit],
                "seconds_to": [p.elapsed_s for p in hit],
                "successes": sum(v >= threshold for v in final),
                "steps_at_end": [r.curve.points[-1].step for r in members if r.curve.points],
            }
        )
    return rows


def markdown(runs: list[StudyRun], threshold: float) -> str:
    """``study.md``: per arm, the median (range) over seeds of the accuracy at the budget, the steps
    and minutes to ``threshold`` (over the runs that reached it), and the success rate."""
    label = metric_name(runs[0].curve.metric).replace("_", " ") if runs else "metric"
    header = (
        f"| arm | runs | {label} at the budget, median (range) | steps to {threshold:.0%} | "
        f"minutes to {threshold:.0%} | success (≥ {threshold:.0%} at the budget) | steps at the budget |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in arm_rows(runs, threshold):
        reached = f"{len(row['steps_to'])}/{row['runs']} reached"
        accuracy = _median_range([100 * v for v in row["accuracy"]], "{:.1f}%")
        lines.append(
            f"| {row['arm']} | {row['runs']} | {accuracy} | "
            f"{_median_range(row['steps_to'], '{:,.0f}')}; {reached} | "
            f"{_median_range([s / 60 for s in row['seconds_to']], '{:.1f}')} | "
            f"{row['successes']}/{row['runs']} | {_median_range(row['steps_at_end'], '{:,.0f}')} |"
        )
    return "\n".join(lines) + "\n"


def median_over_seeds(points: list[list[CurvePoint]], get: Callable[[CurvePoint], float]) -> list[float]:
    """At each validation index, the median over seeds of ``get(point)``."""
    return [statistics.median(get(run[i]) for run in points) for i in range(len(points[0]))]


def plot(runs: list[StudyRun], path: Path, threshold: float) -> None:
    """``study.png``: accuracy against wall-clock minutes and against steps; a colour per arm, each seed a
    thin line, the arm's median over seeds (at each seed's common validation points) bold."""
    from airlab.utils.figures import pyplot, save_figure

    plt = pyplot()
    figure, (by_time, by_step) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colours = plt.get_cmap("tab10")
    arms = list(dict.fromkeys(run.arm for run in runs))
    for index, arm in enumerate(arms):
        colour = colours(index % 10)
        members = [r for r in runs if r.arm == arm and r.curve.points]
        for run in members:
            values = [100 * p.value for p in run.curve.points]
            by_time.plot(
                [p.elapsed_s / 60 for p in run.curve.points], values, color=colour, linewidth=0.6, alpha=0.6
            )
            by_step.plot([p.step for p in run.curve.points], values, color=colour, linewidth=0.6, alpha=0.6)
        length = min((len(r.curve.points) for r in members), default=0)
        if length:
            points = [r.curve.points[:length] for r in members]
            median_values = median_over_seeds(points, lambda p: 100 * p.value)
            by_time.plot(
                median_over_seeds(points, lambda p: p.elapsed_s / 60),
                median_values,
                color=colour,
                lw=2.2,
                label=arm,
            )
            by_step.plot(
                median_over_seeds(points, lambda p: p.step), median_values, color=colour, lw=2.2, label=arm
            )
    for axes, xlabel in ((by_time, "wall-clock minutes since training began"), (by_step, "training steps")):
        axes.axhline(100 * threshold, color="grey", linestyle="--", linewidth=1)
        axes.set_xlabel(xlabel)
        axes.grid(alpha=0.3)
    by_time.set_ylabel(f"validation {metric_name(runs[0].curve.metric).replace('_', ' ')} (%)")
    by_step.legend(loc="lower right", fontsize=8)
    save_figure(figure, path)


def write_study(sweep_dir: Path, threshold: float, metric: str) -> list[Path]:
    """Write ``study.csv``, ``study.md`` and ``study.png`` in ``sweep_dir`` for ``metric`` (a validation
    tag); returns their paths."""
    runs = read_study(sweep_dir, metric)
    if not runs:
        return []
    paths = [sweep_dir / "study.csv", sweep_dir / "study.md", sweep_dir / "study.png"]
    write_csv(runs, paths[0])
    atomic_write_text(paths[1], markdown(runs, threshold))
    plot(runs, paths[2], threshold)
    return paths


class StudySummary(Callback):
    """Hydra callback: writes the study's files at the sweep root when the multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Gather every job's curve and write study.csv, study.md and study.png."""
        study = config.study
        for path in write_study(Path(config.hydra.sweep.dir), float(study.threshold), str(study.metric)):
            log.info("study: %s", path)
