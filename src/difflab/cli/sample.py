"""`python sample.py ckpt=<path> sampler=ddim sampler.steps=25 n=64 seed=0`: PNGs, a grid and a record (`difflab.api.sampling`)."""

from __future__ import annotations

from difflab.api.config import rewrite_argv
from difflab.api.sampling import run
from difflab.utils.entry import hydra_main


def main() -> None:
    """`difflab-sample ckpt=... [overrides]` (`python sample.py`): sample from a checkpoint."""
    hydra_main("sample", run, __name__, rewrite_argv)
