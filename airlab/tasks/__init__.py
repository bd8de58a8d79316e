"""The tasks beside training, side by side: evaluate, variance_report, benchmark, generate_multimnist.

None imports another; only ``airlab.cli`` imports them.

May import: every package.
"""
