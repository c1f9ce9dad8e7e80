"""difflab: train, sample and compare diffusion models on the same footing."""

__version__ = "0.1.0"
