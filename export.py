"""Export a checkpoint to diffusers: `python export.py ckpt=runs/train/<run>/checkpoints/last.ckpt out=<folder>`."""

from functools import partial
from pathlib import Path

import hydra

from difflab.cli.entry import run_script, user_errors
from difflab.cli.export import run
from difflab.cli.train import group_aliases


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
def main(cfg) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    run_script(main, partial(group_aliases, conf_dir=Path(__file__).parent / "conf"))
