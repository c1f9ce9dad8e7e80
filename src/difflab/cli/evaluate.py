"""`python evaluate.py ckpt=<path> sampler=ddim sampler.steps=50 metrics=full n_samples=10000`: the reported numbers
(`difflab.api.evaluating`)."""

from __future__ import annotations

from difflab.api.config import rewrite_argv
from difflab.api.evaluating import run
from difflab.utils.entry import hydra_main


def main() -> None:
    """`difflab-evaluate ckpt=... [overrides]` (`python evaluate.py`): score a checkpoint or a folder of images."""
    hydra_main("evaluate", run, __name__, rewrite_argv)
