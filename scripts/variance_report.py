"""Gradient variance of estimator configurations, side by side: `python scripts/variance_report.py [...]`.

Writes variance_report.json, .md and .png in the run directory (see docs/variance.md).
"""

import hydra
from omegaconf import DictConfig

from airlab.errors import report_user_errors, run_hydra_app


@hydra.main(version_base="1.3", config_path="../configs", config_name="variance_report")
def main(cfg: DictConfig) -> None:
    from airlab.tasks.variance_report import run_variance_report

    report_user_errors(run_variance_report, cfg)


if __name__ == "__main__":
    run_hydra_app(main)
