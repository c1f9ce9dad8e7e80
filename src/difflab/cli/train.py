"""`python train.py [overrides]`: the training run of `difflab.api.training`, and what it returns to a Hydra sweeper."""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

from difflab.api import checks
from difflab.api.config import rewrite_argv
from difflab.api.training import run
from difflab.callbacks.nan_guard import NonFiniteLossError
from difflab.errors import ConfigError
from difflab.utils.config import sweeper_direction
from difflab.utils.entry import hydra_main

log = logging.getLogger(__name__)


def objective(cfg: DictConfig) -> float | None:
    """The task of `train.py`: train, then return the final value of `optimized_metric` (null: None), the number a
    Hydra sweeper optimizes (`hparams_search=optuna`). In a sweep, a trial whose loss turns non-finite returns the
    worst value for the sweeper's direction instead of ending the study."""
    name = checks.optimized_metric(cfg)
    try:
        metrics = run(cfg)["metrics"]
    except NonFiniteLossError as exc:
        direction = sweeper_direction()
        if name is None or direction is None:
            raise
        worst = -math.inf if direction == "maximize" else math.inf
        log.warning("trial stopped (%s); %s = %s for the sweeper", exc, name, worst)
        return worst
    if name is None:
        return None
    if name not in metrics:
        raise ConfigError.bad_value("optimized_metric", f"the run logged no {name} (it logged {', '.join(sorted(metrics))})",
                                    "Name one of those.")
    log.info("optimized_metric %s = %.6g", name, metrics[name])
    return metrics[name]


def main() -> None:
    """`difflab-train [overrides]` (`python train.py`): train from `conf/train.yaml`."""
    hydra_main("train", objective, __name__, rewrite_argv)
