"""Tabulate every run's metrics.json: `python compare.py [runs_dir=<folder>] [wandb_project=<project>]`."""

import hydra

from difflab.cli.compare import run
from difflab.cli.entry import run_script, user_errors


@hydra.main(config_path="conf", config_name="compare", version_base="1.3")
def main(cfg) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    run_script(main)
