"""Generative models (VAE, AIR), each a Pyro model and guide with its declared capabilities.

May import: contracts, evaluation, utils.
"""
