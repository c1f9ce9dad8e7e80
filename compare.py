"""Tabulate every run's metrics.json: `python compare.py [runs_dir=<folder>] [wandb_project=<project>]`."""

from difflab.cli.compare import main

if __name__ == "__main__":
    main()  # difflab.utils.entry.hydra_main: conf/compare.yaml under the error contract
