"""Score a checkpoint or a folder of images: `python evaluate.py ckpt=<path> sampler=ddim sampler.steps=50 metrics=full`."""

import hydra

from difflab.cli.entry import run_script, user_errors
from difflab.cli.evaluate import run


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    run_script(main)
