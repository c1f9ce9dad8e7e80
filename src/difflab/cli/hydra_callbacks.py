"""Hydra callbacks: train.py claims its run folder before Hydra writes into it; after an `evaluate.py -m` sweep or a
`train.py -m experiment=compare_variants` sweep, its runs as one comparison (table, plots, gallery, W&B Table) in the
sweep folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from difflab.utils.entry import user_errors
from difflab.utils.run_folders import check_run_folder, make_unique_folder
from difflab.compare import collect_local, log_wandb_table, write_comparison
from difflab.utils.cluster import is_rank_zero
from difflab.utils import loggers

log = logging.getLogger(__name__)


class CompareOnMultirunEnd(Callback):
    """`python evaluate.py ckpt=... -m sampler=ddim,heun sampler.steps=10,20,50` ends with
    `<sweep dir>/comparison.md|csv` and the FID-vs-NFE plots: the quality-vs-steps table of that model;
    `python train.py -m experiment=compare_variants` with the variant table and `gallery.png`. With a W&B logger
    in the config, the table (with its column of sample images), plots and gallery go to one more W&B run."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        records = collect_local(sweep_dir)
        # the sweep's own folder: its comparison is replaced when the callback runs again
        rows, paths, images = write_comparison(records, sweep_dir, str(sweep_dir.resolve()), sweep_dir, overwrite=True,
                                               key="hydra.sweep.dir")
        log.info("comparison of %d runs: %s", len(records), paths["markdown"])
        if OmegaConf.select(config, "logger.wandb", default=None, throw_on_resolution_failure=False) is not None:
            log_comparison_to_wandb(config, rows, images, sweep_dir)


def log_comparison_to_wandb(config: DictConfig, rows: list[dict[str, Any]], images: dict[str, Path],
                            sweep_dir: Path) -> None:
    """The comparison as its own W&B run (job type "compare", grouped with the sweep's runs) in `logger.wandb`'s
    project and mode."""
    def setting(key: str, default: Any) -> Any:
        return OmegaConf.select(config, f"logger.wandb.{key}", default=default, throw_on_resolution_failure=False)

    logger = loggers.wandb_logger(save_dir=str(sweep_dir / "comparison_wandb"), project=str(setting("project", "difflab")),
                          name=f"comparison {sweep_dir.name}", group=sweep_dir.name, job_type="compare",
                          mode=str(setting("mode", "auto")))
    log_wandb_table(rows, logger.experiment, plots=images)
    logger.experiment.finish()


class ClaimRunFolder(Callback):
    """Hydra callback of train.py: creates the run (or sweep) folder before Hydra writes anything into it, and
    refuses an existing run's folder unless the run resumes it (see `check_run_folder`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():  # DDP workers join the folder that rank 0 created
            return
        with user_errors():  # before Hydra's own error handling: one paragraph and exit status 2
            folder = Path(str(OmegaConf.select(config, "hydra.run.dir")))
            check_run_folder(folder, OmegaConf.select(config, "ckpt_path", default=None))
            make_unique_folder(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with user_errors():
            make_unique_folder(config, "hydra.sweep.dir")
