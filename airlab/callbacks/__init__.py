"""Lightning callbacks: pictures, object counts, progress, throughput, early stopping.

May import: config, contracts, estimators, evaluation, resume, tracking, utils.
"""
