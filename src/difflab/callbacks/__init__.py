"""Training callbacks: EMA, sample grids, non-finite-loss guard."""

from difflab.callbacks.ema import EMA, find_ema
from difflab.callbacks.nan_guard import FiniteLossGuard, NonFiniteLossError
from difflab.callbacks.sample_grid import SampleGrid, save_grid

__all__ = ["EMA", "FiniteLossGuard", "NonFiniteLossError", "SampleGrid", "find_ema", "save_grid"]
