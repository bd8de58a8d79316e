"""Learning curves read back from runs: a validation metric against steps and wall-clock time.

``python -m airlab.tracking.curves RUN_DIR... --out curves.png`` prints, per run, the steps and minutes
at which a validation metric first reached each threshold, its value at the end and the final ELBO (a
markdown table), and draws the curves against wall-clock minutes. The metric is ``--metric``, by default
the first of the run's model's ``headline_metrics`` (else ``val/elbo``). Time is ``throughput/elapsed_s``,
which the throughput monitor logs at every validation: wall time since training began, validation
included, so it is the clock that ``trainer.max_time`` stops.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

ELAPSED_TAG = "throughput/elapsed_s"


@dataclass(frozen=True)
class CurvePoint:
    """One validation of a run: global step, wall time since training began, metric value."""

    step: int
    elapsed_s: float
    value: float


@dataclass
class RunCurve:
    """One run's validation metric over steps and time, with its final ``metrics.json``."""

    run_dir: Path
    seed: int | None
    points: list[CurvePoint]
    final: dict[str, float]  # metrics.json
    metric: str  # the validation tag of the points

    def first_reaching(self, threshold: float) -> CurvePoint | None:
        """The first validation at which the metric reached ``threshold``, or None."""
        return next((p for p in self.points if p.value >= threshold), None)


def read_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """``tag -> [(step, value)]`` from the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # a line per event file otherwise
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    present = set(events.Tags()["scalars"])
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] if tag in present else [] for tag in tags}


def headline_metric(run_dir: Path) -> str:
    """``val/<first headline metric>`` of the model a run trained (its saved ``.hydra/config.yaml``), else
    ``val/elbo``."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    config = Path(run_dir) / ".hydra" / "config.yaml"
    target = OmegaConf.load(config).get("model", {}).get("_target_") if config.is_file() else None
    headline = get_class(target).headline_metrics if target else ()
    return f"val/{headline[0]}" if headline else "val/elbo"


def read_curve(run_dir: Path, metric: str) -> RunCurve:
    """The metric at every validation, with the elapsed time logged at the same validation.

    Lightning logs epoch-end validation metrics at ``global_step - 1`` and the monitor logs the time at
    ``global_step``; each value is paired with the time logged at its own step or the next one.
    """
    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir, (metric, ELAPSED_TAG))
    elapsed = dict(scalars[ELAPSED_TAG])
    points = []
    for step, value in scalars[metric]:
        seconds = elapsed.get(step, elapsed.get(step + 1))
        if seconds is not None:
            points.append(CurvePoint(step + 1, seconds, value))
    metrics_file = run_dir / "metrics.json"
    final = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return RunCurve(run_dir, final.get("seed"), points, final, metric)


def _at(point: CurvePoint | None) -> str:
    return "not reached" if point is None else f"{point.step:,} ({point.elapsed_s / 60:.1f} min)"


def markdown_table(curves: list[RunCurve], thresholds: tuple[float, ...] = (0.9, 0.95)) -> str:
    """One row per run: seed, steps (minutes) to each threshold, the final metric and ELBO."""
    metric = curves[0].metric if curves else "val/elbo"
    test_metric = "test/" + metric.split("/", 1)[-1]
    header = ["seed", *[f"steps (min) to {t:.0%}" for t in thresholds]]
    header += [f"{metric} at the end", "steps at the end", "val/elbo at the end", test_metric]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for curve in curves:
        final = curve.final
        cells = [str(curve.seed), *[_at(curve.first_reaching(t)) for t in thresholds]]
        cells += [
            f"{final[metric]:.1%}" if metric in final else "-",
            f"{final['global_step']:,}" if "global_step" in final else "-",
            f"{final['val/elbo']:.1f}" if "val/elbo" in final else "-",
            f"{final[test_metric]:.1%}" if test_metric in final else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot_curves(curves: list[RunCurve], path: Path, threshold: float = 0.95) -> None:
    """The metric (in %) against wall-clock minutes (left) and steps (right), one line per run."""
    from airlab.utils.figures import pyplot, save_figure

    plt = pyplot()
    figure, (by_time, by_step) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for curve in curves:
        label = f"seed {curve.seed}" if curve.seed is not None else curve.run_dir.name
        minutes = [p.elapsed_s / 60 for p in curve.points]
        values = [100 * p.value for p in curve.points]
        by_time.plot(minutes, values, marker=".", label=label)
        by_step.plot([p.step for p in curve.points], values, marker=".", label=label)
    for axes, xlabel in ((by_time, "wall-clock minutes since training began"), (by_step, "training steps")):
        axes.axhline(100 * threshold, color="grey", linestyle="--", linewidth=1)
        axes.set_xlabel(xlabel)
        axes.grid(alpha=0.3)
    by_time.set_ylabel(f"{curves[0].metric if curves else ''} (%)")
    by_time.legend(loc="lower right")
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> None:
    """Command line: print the curves' markdown table and, with ``--out``, draw them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="write the plot here (PNG)")
    parser.add_argument("--metric", help="a validation tag (default: the model's first headline metric)")
    args = parser.parse_args(argv)
    metric = args.metric or headline_metric(args.run_dirs[0])
    curves = [read_curve(d, metric) for d in args.run_dirs]
    print(markdown_table(curves))
    if args.out is not None:
        plot_curves(curves, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
