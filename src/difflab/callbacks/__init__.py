"""Training callbacks: EMA, the LoRA file, sample grids, sample-quality metrics, throughput, progress, non-finite-loss
guard, stopping on a signal."""

from difflab.callbacks.ema import EMA, find_ema
from difflab.callbacks.interrupt import StopOnSignal
from difflab.callbacks.lora import LoraFile
from difflab.callbacks.metrics import SampleMetrics
from difflab.callbacks.nan_guard import FiniteLossGuard, NonFiniteLossError
from difflab.callbacks.progress import TrainProgress
from difflab.callbacks.sample_grid import SampleGrid
from difflab.utils.images import save_grid
from difflab.callbacks.throughput import TrainThroughput

__all__ = [
    "EMA",
    "FiniteLossGuard",
    "LoraFile",
    "NonFiniteLossError",
    "SampleGrid",
    "SampleMetrics",
    "StopOnSignal",
    "TrainProgress",
    "TrainThroughput",
    "find_ema",
    "save_grid",
]
