"""Generative models, each with a Pyro model and guide."""
