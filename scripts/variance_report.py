"""Gradient variance of estimator configurations, side by side: `python scripts/variance_report.py [...]`.

Writes variance_report.json, .md and .png in the run directory (see docs/variance.md).

The same Hydra app as the console script `airlab-variance-report` (airlab/cli.py).
"""

from airlab.cli import variance_report

if __name__ == "__main__":
    variance_report()
