"""`python export.py ckpt=<checkpoint> format=diffusers out=<folder>`: a difflab model as a diffusers pipeline folder
(`difflab.api.exporting`)."""

from __future__ import annotations

from difflab.api.config import rewrite_argv
from difflab.api.exporting import run
from difflab.utils.entry import hydra_main


def main() -> None:
    """`difflab-export ckpt=... out=<folder>` (`python export.py`): a checkpoint as a diffusers pipeline folder."""
    hydra_main("export", run, __name__, rewrite_argv)
