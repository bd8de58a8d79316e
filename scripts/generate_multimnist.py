"""Build or validate the MultiMNIST cache: `python scripts/generate_multimnist.py [data.* overrides]`.

The same Hydra app as the console script `airlab-generate-multimnist` (airlab/cli.py).
"""

from airlab.cli import generate_multimnist

if __name__ == "__main__":
    generate_multimnist()
