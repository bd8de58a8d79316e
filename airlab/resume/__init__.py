"""Everything a checkpoint holds and how it is written, read safely and restored.

May import: config, contracts, estimators, tracking, utils.
"""
