"""Train a diffusion model: `python train.py model=ddim data=mnist trainer.max_steps=20000`."""

from functools import partial
from pathlib import Path

import hydra

from difflab.cli.entry import run_script, user_errors
from difflab.cli.train import group_aliases, run


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    run_script(main, partial(group_aliases, conf_dir=Path(__file__).parent / "conf"))  # model.autoencoder=..., sampler="Euler a"
