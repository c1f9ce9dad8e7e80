"""The difflab studio, a local web app: `python studio.py [port=7860] [runs_dir=<folder>] [ckpt_dirs=[<folder>]]`."""

import hydra

from difflab.cli.entry import run_script, user_errors
from difflab.cli.studio import run


@hydra.main(config_path="conf", config_name="studio", version_base="1.3")
def main(cfg) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    run_script(main)
