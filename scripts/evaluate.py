"""Evaluate a checkpoint: `python scripts/evaluate.py ckpt_path=PATH [overrides]` (see README).

The same Hydra app as the console script `airlab-evaluate` (airlab/cli.py).
"""

from airlab.cli import evaluate

if __name__ == "__main__":
    evaluate()
