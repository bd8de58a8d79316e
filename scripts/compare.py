"""Trained runs side by side: `python scripts/compare.py 'compare.runs=[RUN_A,RUN_B]'` (see docs/results.md).

Writes comparison.json, comparison.md and reconstructions.png in the run directory.
The same Hydra app as the console script `airlab-compare` (airlab/cli.py).
"""

from airlab.cli import compare

if __name__ == "__main__":
    compare()
