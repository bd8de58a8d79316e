"""Benchmark a training config against in-run references: `python scripts/benchmark.py [overrides]`.

The same Hydra app as the console script `airlab-benchmark` (airlab/cli.py).
"""

from airlab.cli import benchmark

if __name__ == "__main__":
    benchmark()
