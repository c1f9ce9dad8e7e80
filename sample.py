"""Sample from a checkpoint: `python sample.py ckpt=runs/train/<run>/checkpoints/last.ckpt sampler=ddim n=64`."""

import hydra

from difflab.cli.entry import run_script, user_errors
from difflab.cli.sample import run


@hydra.main(config_path="conf", config_name="sample", version_base="1.3")
def main(cfg) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    run_script(main)
