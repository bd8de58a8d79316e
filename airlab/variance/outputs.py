"""The variance report's outputs: ``variance_report.json``, a markdown table, a log-scale bar chart,
and both in TensorBoard. Rendering only; the measurement is in ``variance_report.py``."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from airlab.utils.figures import pyplot

log = logging.getLogger(__name__)


def write_outputs(output: dict[str, Any], run_dir: Path) -> None:
    """Write ``variance_report.json``, ``.md`` and ``.png`` under ``run_dir``, and the table and chart to
    TensorBoard."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    statistic = output["config"]["report"]["snr_statistic"]
    series = particle_series(output, statistic)
    if len(next(iter(series.values()), [])) >= 2:
        output["snr_slopes"] = {group: fitted_slope(points) for group, points in series.items()}
        output["snr_at_largest_k"] = {group: points[-1][1] for group, points in series.items()}
        if statistic == "snr_per_dim":  # what |mean| / sd reads, on average, where the true mean is zero
            output["snr_noise_floor"] = math.sqrt(2 / math.pi) / math.sqrt(output["config"]["num_samples"])
        snr_plot(series, output["snr_slopes"], run_dir / "snr_vs_particles.png", statistic)
    (run_dir / "variance_report.json").write_text(json.dumps(output, indent=2))
    table = markdown_report(output)
    (run_dir / "variance_report.md").write_text(table)
    image = bar_chart(output, run_dir / "variance_report.png")
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    writer.add_text("variance_report", table, 0)
    writer.add_image("variance_report", image, 0, dataformats="HWC")
    writer.close()
    log.info("variance report:\n%s", table)


# -- rendering -------------------------------------------------------------------------------------


def _table(title: str, rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    lines = [
        f"### {title}",
        "",
        "| configuration | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, values in rows.items():
        cells = [f"{values[c]:.4g}" if c in values else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _columns(estimators: dict[str, Any], part: str) -> list[str]:
    return list(dict.fromkeys(k for e in estimators.values() for k in e[part]))


def markdown_report(output: dict[str, Any]) -> str:
    """The report as markdown: what was measured, a table per group statistic and per score term, skips."""
    estimators, config = output["estimators"], output["config"]
    groups, sites = _columns(estimators, "groups"), _columns(estimators, "terms")
    model = str(config["model"].get("_target_", "?")).rsplit(".", 1)[-1]
    source = config["ckpt_path"] or "fresh weights"
    parts = [
        "## Gradient variance by estimator configuration\n",
        f"{model} ({source}, step {config['global_step']}), one minibatch of {config['batch_size']} images, "
        f"K = {config['num_samples']} gradient draws per configuration, seed {config['seed']}.\n",
    ]
    for stat, title in (
        ("var", "Total variance by parameter group (trace of the covariance)"),
        ("snr", "SNR by parameter group (norm of the mean / sqrt of the total variance)"),
        ("mean_sq_norm", "Mean squared norm by parameter group"),
        ("snr_per_dim", "SNR per dimension by parameter group (|mean| / sd, averaged over coordinates)"),
    ):
        rows = {n: {g: v[stat] for g, v in e["groups"].items() if stat in v} for n, e in estimators.items()}
        parts.append(_table(title, rows, groups))
    if sites:
        rows = {n: {s: v["var"] for s, v in e["terms"].items()} for n, e in estimators.items()}
        parts.append(_table("Total variance of each score-function term's gradient", rows, sites))
    if "snr_slopes" in output:
        lines = [
            "### SNR against the number of particles K (log-log slope, least squares)\n",
            "Rainforth et al. 2018 report, for the IWAE bound, about -0.5 for the encoder and +0.5 for the "
            "decoder (snr_vs_particles.png).\n",
            "| group | slope |",
            "|---|---|",
            *(f"| {group} | {slope:+.3f} |" for group, slope in output["snr_slopes"].items()),
        ]
        if "snr_noise_floor" in output:
            lines.append(
                "\nPer-dimension SNR, whose floor (every true mean zero) is "
                f"{output['snr_noise_floor']:.4f} at {output['config']['num_samples']} draws; "
                "at the largest K: "
                + ", ".join(f"{g} {v:.4f}" for g, v in output["snr_at_largest_k"].items())
            )
        parts.append("\n".join(lines) + "\n")
    if config["skipped"]:
        parts.append("### Skipped\n\n" + "".join(f"- {n}: {r}\n" for n, r in config["skipped"].items()))
    return "\n".join(parts)


def bar_chart(output: dict[str, Any], path: Path) -> np.ndarray:
    """Grouped bars on a log scale; writes ``path`` and returns the picture as RGB ``[H, W, 3]``."""
    plt = pyplot()

    estimators = output["estimators"]
    panels = [("total variance by group", "groups", "var"), ("SNR by group", "groups", "snr")]
    if _columns(estimators, "terms"):
        panels.append(("variance by score-function term", "terms", "var"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    width = 0.8 / max(len(estimators), 1)
    colours = plt.get_cmap("tab10")
    for ax, (title, part, stat) in zip(axes[0], panels, strict=True):
        columns = _columns(estimators, part)
        for i, (name, entry) in enumerate(estimators.items()):
            values = [entry[part].get(c, {}).get(stat, np.nan) for c in columns]
            positions = np.arange(len(columns)) + (i - (len(estimators) - 1) / 2) * width
            ax.bar(positions, values, width, label=name, color=colours(i % 10))
        ax.set_xticks(np.arange(len(columns)), columns, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def particle_series(output: dict[str, Any], statistic: str) -> dict[str, list[tuple[int, float]]]:
    """Per parameter group, ``(K, statistic)`` of the ``report.particles_of`` configuration and its
    ``_k<K>`` variants, sorted by K (empty without such a series); ``statistic`` is ``snr`` (the norm
    of the mean over the root of the total variance) or ``snr_per_dim``."""
    config = output["config"]
    base = (config.get("report") or {}).get("particles_of")
    series: dict[str, list[tuple[int, float]]] = {}
    for name, entry in output["estimators"].items():
        k = config["configurations"].get(name, {}).get("num_particles")
        if base is None or k is None or not (name == base or name.startswith(f"{base}_k")):
            continue
        for group, stats in entry["groups"].items():
            series.setdefault(group, []).append((int(k), float(stats[statistic])))
    return {group: sorted(points) for group, points in series.items()}


def fitted_slope(points: list[tuple[int, float]]) -> float:
    """The least-squares slope of log SNR against log K."""
    k, snr = np.array(points, dtype=float).T
    return float(np.polyfit(np.log(k), np.log(snr), 1)[0])


def snr_plot(
    series: dict[str, list[tuple[int, float]]], slopes: dict[str, float], path: Path, statistic: str
) -> None:
    """SNR against K on log-log axes, a line per group with its fitted slope."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for group, points in series.items():
        k, snr = np.array(points, dtype=float).T
        line = ax.plot(k, snr, marker="o", label=f"{group}: slope {slopes[group]:+.2f}")[0]
        fit = np.polyfit(np.log(k), np.log(snr), 1)
        ax.plot(k, np.exp(np.polyval(fit, np.log(k))), linestyle="--", color=line.get_color(), linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("particles K")
    ax.set_ylabel(
        "gradient SNR per dimension (|mean| / sd, averaged)"
        if statistic == "snr_per_dim"
        else "gradient SNR (norm of the mean / sqrt of the total variance)"
    )
    ax.set_title("IWAE gradient SNR against K (Rainforth et al.: -0.5 / +0.5)", fontsize=10)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
