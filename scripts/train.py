"""Train a model: `python scripts/train.py [overrides]` (see README; `--cfg job` lists the keys).

The same Hydra app as the console script `airlab-train` (airlab/cli.py).
"""

from airlab.cli import train

if __name__ == "__main__":
    train()
