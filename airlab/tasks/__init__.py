"""The tasks the scripts run, side by side: train, evaluate, variance_report, benchmark and
generate_multimnist. Each composes its pieces with :mod:`airlab.build`; no task imports another."""
