"""Evaluation of checkpoints: bounds, latent-space and attention pictures (see ``airlab.evaluate``)."""
