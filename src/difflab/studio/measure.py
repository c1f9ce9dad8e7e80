"""The Measure tab: the values a condition regressor reads from images, in the raw units of the model's columns.

`predict_values` is the one place that knows which regressor it asks: today the condition regressor of the
`cond_mae` metric (`difflab.metrics.classifier`, target "cond"), trained on the checkpoint's own training data
and cached next to the metric statistics, the same network that scores vector-conditioned samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from difflab.errors import ConfigError


def predict_values(module: Any, images: Sequence[str | Path], cache_dir: str | Path, epochs: int = 5,
                   seed: int = 0) -> list[dict[str, float]]:
    """{column: raw value} for each image file, read by the condition regressor of a vector-conditioned model;
    each file is preprocessed as the run's training images were (the data module's ROI crop and resize)."""
    from difflab.cli.sample import load_image, run_data
    from difflab.metrics.classifier import load_or_train_classifier
    from difflab.metrics.inception import quantize

    stats = getattr(module.condition, "stats", None)
    if stats is None or "cond" not in module.condition.inputs:
        raise ConfigError(f"Measuring needs a vector-conditioned model (model=cond_vector); this one is "
                          f"{module.condition.describe()}. Pick a checkpoint trained on vector data.")
    if not images:
        raise ConfigError("Measuring needs at least one image: upload PNG or JPEG files.")
    data = run_data(module)
    if data is None:
        raise ConfigError("Measuring trains its regressor on the checkpoint's training data, and that data "
                          "module cannot be built on this machine: put the data where the run had it.")
    regressor, _, _ = load_or_train_classifier(data, cache_dir, epochs=epochs, seed=seed, target="cond")
    channels, resolution = module.image_shape[0], module.image_shape[-1]
    batch = torch.cat([load_image(str(p), "image", data, channels, resolution) for p in images])  # (N, C, R, R)
    with torch.no_grad():
        z = regressor(quantize(batch)).double()  # (N, D) z-scores of the training split
    mean, std = torch.tensor(stats.mean, dtype=torch.float64), torch.tensor(stats.std, dtype=torch.float64)
    raw = z * std + mean  # (N, D) raw units
    return [dict(zip(stats.columns, row)) for row in raw.tolist()]
