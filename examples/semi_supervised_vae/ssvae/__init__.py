"""The semi-supervised VAE (model M2 of Kingma et al. 2014) as an airlab user's own package."""
