"""A sweep's jobs summarised per configuration: mean, spread and a t-interval of each metric over seeds.

The one implementation behind ``summary_by_config.csv`` and ``summary.md`` (written beside a sweep's
``summary.csv`` by :func:`airlab.tracking.sweep.summarise_sweep`) and ``Sweep.aggregate`` of
:mod:`airlab.analysis`. It works on plain rows (dicts: a job's override values and its metrics), without
pandas, so that the sweep callback stays light.

The layout is tidy: one row per configuration and metric, holding the configuration's override values,
``metric``, and :data:`STATISTICS`: ``n`` (jobs with a finite value), ``mean``, ``sd`` (the sample
standard deviation, ddof=1), ``se`` (``sd / sqrt(n)``), ``ci_low`` and ``ci_high`` (the t-interval
``mean ± t(1 - (1 - confidence) / 2, n - 1) · se``), ``min`` and ``max``. With ``n = 1``, ``sd``, ``se``
and the interval are NaN.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: The statistics of each configuration's metric, in column order.
STATISTICS = ("n", "mean", "sd", "se", "ci_low", "ci_high", "min", "max")
#: The column naming the metric a row describes.
METRIC_COLUMN = "metric"
#: ``t(0.975, df)`` for df = 1..30 (the fallback without scipy; beyond 30 a Cornish-Fisher expansion).
T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def override_values(overrides: Sequence[str]) -> dict[str, Any]:
    """``["seed=0", "+model.beta=2", "optim.lr=1e-3"]`` -> ``{"seed": 0, "model.beta": 2, "optim.lr":
    0.001}``: Hydra's override grammar gives each value its type; any other value than a string, number or
    bool (a list, a dict) is kept as its text, so that it can be grouped on; a deletion ``~key`` is None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    values: dict[str, Any] = {}
    for text in overrides:
        key, _, raw = text.partition("=")
        key = key.lstrip("+~")
        try:
            (parsed,) = parser.parse_overrides([text])
            value = None if parsed.is_delete() else parsed.value()
        except Exception:  # not Hydra's grammar (a row read back from summary.csv): the text as written
            value = raw or None
        values[key] = value if value is None or isinstance(value, str | int | float | bool) else raw
    return values


def numeric(value: Any) -> float | None:
    """``value`` as a finite float (a number, or a number's text as ``summary.csv`` holds it), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom: scipy's when scipy is
    installed, else (for ``probability = 0.975`` only) a table, or an expansion beyond 30 degrees."""
    try:
        from scipy.stats import t
    except ImportError:
        if not math.isclose(probability, 0.975):
            raise ValueError(f"t quantile {probability}: needs scipy (without it only 0.975)") from None
        if df <= len(T_975):
            return T_975[df - 1]
        z = statistics.NormalDist().inv_cdf(probability)
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    return float(t.ppf(probability, df))


def describe(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """:data:`STATISTICS` of ``values`` (at least one): ``sd``, ``se`` and the interval are NaN for one."""
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else math.nan
    se = sd / math.sqrt(n) if n > 1 else math.nan
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * se if n > 1 else math.nan
    return {
        "n": n,
        "mean": mean,
        "sd": sd,
        "se": se,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "min": min(values),
        "max": max(values),
    }


def metric_names(rows: Iterable[Mapping[str, Any]], exclude: Iterable[str] = ()) -> list[str]:
    """The keys of ``rows`` (sorted) that hold a number in at least one row, except ``exclude``."""
    skip = set(exclude)
    return sorted({k for row in rows for k, v in row.items() if k not in skip and numeric(v) is not None})


def config_keys(rows: Iterable[Mapping[str, Any]], exclude: Iterable[str] = ()) -> list[str]:
    """The keys of ``rows`` in order of first appearance, except ``exclude``."""
    skip, keys = set(exclude), {}
    for row in rows:
        keys.update((k, None) for k in row if k not in skip)
    return list(keys)


def aggregate_rows(
    rows: Sequence[Mapping[str, Any]],
    by: Sequence[str],
    metrics: Sequence[str],
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """One row per configuration (the values of ``by``, in order of first appearance) and metric (in the
    order of ``metrics``): the configuration's values, ``metric`` and :data:`STATISTICS` over the rows
    that hold a finite value of it. A configuration without any value of a metric has no row for it."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in by), []).append(row)
    table = []
    for values, members in groups.items():
        for metric in metrics:
            found = [v for v in (numeric(row.get(metric)) for row in members) if v is not None]
            if found:
                config = dict(zip(by, values, strict=True))
                table.append({**config, METRIC_COLUMN: metric, **describe(found, confidence)})
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value).replace("|", "\\|")


def markdown_table(table: Sequence[Mapping[str, Any]], by: Sequence[str], confidence: float = 0.95) -> str:
    """``table`` (of :func:`aggregate_rows`) as markdown: the configuration, the metric, ``n``, ``mean``,
    ``sd``, ``se``, the interval as ``[low, high]``, ``min`` and ``max``; NaN is ``–``."""
    header = [*by, METRIC_COLUMN, "n", "mean", "sd", "se", f"{confidence:.0%} CI", "min", "max"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        interval = f"[{_cell(row['ci_low'])}, {_cell(row['ci_high'])}]"
        cells = [*(row.get(k) for k in by), row[METRIC_COLUMN], row["n"], row["mean"], row["sd"], row["se"]]
        cells = [_cell(c) for c in cells] + [interval, _cell(row["min"]), _cell(row["max"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def aggregate_jobs(
    jobs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    over: str = "seed",
    exclude: Iterable[str] = (),
    confidence: float = 0.95,
) -> tuple[list[str], list[dict[str, Any]]]:
    """The finished ``jobs`` of a sweep, each ``(override values, metrics)``, aggregated over ``over``:
    grouped by every other override key (except ``exclude``), with every numeric metric that is not an
    override key (nor ``over``: ``metrics.json`` holds the seed). Returns the grouping keys and the
    :func:`aggregate_rows` table."""
    by = config_keys([values for values, _ in jobs], exclude=(over, *exclude))
    metrics = metric_names([found for _, found in jobs], exclude=(*by, over))
    rows = [{**found, **values} for values, found in jobs]
    return by, aggregate_rows(rows, by, metrics, confidence)
