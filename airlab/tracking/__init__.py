"""Where results go and are read back: trackers, sweep summaries, learning curves, the study report.

May import: contracts, utils.
"""
