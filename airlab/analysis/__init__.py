"""Runs and sweeps as Python objects, for notebooks: load_run, load_sweep.

A run folder (``scripts/train.py``'s ``outputs/<task>/<date>/<time>/``) becomes a
:class:`~airlab.analysis.runs.Run`: its config, final metrics, every logged scalar as a DataFrame, its
checkpoints, its model rebuilt and loaded safely, a Pyro ``Predictive`` over it, its pictures. A sweep
folder (``-m``) becomes a :class:`~airlab.analysis.sweeps.Sweep`: one row per job, and the metrics
aggregated over seeds (the same code as the sweep's ``summary_by_config.csv``,
:mod:`airlab.tracking.aggregate`). See docs/usage.md, "Runs and sweeps in Python".

May import: contracts, resume, tracking, training.
"""
