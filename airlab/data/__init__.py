"""LightningDataModules: MNIST, MultiMNIST generated from it, a user's arrays.

May import: contracts, resume, utils.
"""
