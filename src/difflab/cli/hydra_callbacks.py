"""Hydra callbacks: after an `evaluate.py -m` sweep, its runs as one comparison table in the sweep folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class CompareOnMultirunEnd(Callback):
    """`python evaluate.py ckpt=... -m sampler=ddim,heun sampler.steps=10,20,50` ends with
    `<sweep dir>/comparison.md|csv` and the FID-vs-NFE plots: the quality-vs-steps table of that model."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from difflab.cli.compare import write_comparison
        from difflab.compare import collect_local

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        records = collect_local(sweep_dir)
        _, paths, _ = write_comparison(records, sweep_dir, str(sweep_dir.resolve()), sweep_dir)
        log.info("quality-vs-steps table of %d runs: %s", len(records), paths["markdown"])
