"""Bounds, object counts and pictures, computed from tensors and models.

May import: contracts, utils.
"""
