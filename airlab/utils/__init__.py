"""Small helpers that know nothing of airlab: atomic file writes, the spatial transformer, figures and grids.

May import: nothing.
"""
