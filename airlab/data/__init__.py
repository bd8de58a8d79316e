"""Data modules: MNIST (bundled subset or torchvision files) and MultiMNIST generated from it."""
