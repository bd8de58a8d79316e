"""What scripts/benchmark.py measures beyond a training run: AIR against its in-run reference, the machine.

May import: config, contracts, data, estimators, models, training, utils.
"""
