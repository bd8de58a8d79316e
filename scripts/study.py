"""An estimator study: `python scripts/study.py study=air_estimators [overrides]` (see README).

Runs every arm x seed of the preset as one Hydra multirun and writes study.csv, study.md and study.png
at the sweep root.

The same Hydra app as the console script `airlab-study` (airlab/cli.py).
"""

from airlab.cli import study

if __name__ == "__main__":
    study()
