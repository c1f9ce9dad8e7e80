"""Train a diffusion model: `python train.py model=ddim data=mnist trainer.max_steps=20000`."""

import sys
from pathlib import Path

import hydra

from difflab.cli.entry import run_script, user_errors
from difflab.cli.train import group_aliases, run


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    sys.argv = group_aliases(sys.argv, Path(__file__).parent / "conf")  # model.autoencoder=pretrained
    run_script(main)
