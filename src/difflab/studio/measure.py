"""The Measure tab: the values a condition regressor reads from images, in the raw units of its columns.

The regressor is either a `model=regressor` checkpoint (`python train.py model=regressor data=...`, the one
`predict.py` reads with) or, for a vector-conditioned diffusion checkpoint, the condition regressor of its
`cond_mae` metric (`difflab.evaluation.classifier`, target "cond"), trained once on the checkpoint's own training data
and cached next to the metric statistics. Images go through `predict.py`'s reader: the regressor's data module
preprocesses them as its training images were (ROI crop, resize), and files already of the model's size are read
as they are (`preprocess=auto`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from difflab.api.images import run_data
from difflab.api.models import DiffusionModel, Regressor, load
from difflab.errors import ConfigError
from difflab.evaluation.classifier import load_or_train_classifier
from difflab.lit.checkpoint import read_checkpoint, stored_model_class
from difflab.lit.regressor import RegressorModule


def require_images(images: Sequence[str | Path]) -> None:
    """A ConfigError when no image was uploaded (checked before any regressor is loaded or trained)."""
    if not images:
        raise ConfigError("Measuring needs at least one image: upload PNG or JPEG files.")


def read_values(regressor: Regressor, images: Sequence[str | Path], datamodule: Any = None) -> list[dict[str, float]]:
    """{column: raw value} for each image file, read by a regressor as `python predict.py` reads them."""
    require_images(images)
    values = regressor.predict([Path(p) for p in images], datamodule=datamodule)
    return [dict(zip(regressor.columns, row)) for row in values.double().tolist()]


def predict_values(model: DiffusionModel, images: Sequence[str | Path], cache_dir: str | Path, epochs: int = 5,
                   seed: int = 0) -> list[dict[str, float]]:
    """{column: raw value} for each image file, read by the `cond_mae` regressor of a vector-conditioned model."""
    module = model.module
    if getattr(module.condition, "stats", None) is None or "cond" not in module.condition.inputs:
        raise ConfigError(f"Measuring needs a condition regressor (model=regressor) or a vector-conditioned model "
                          f"(model=cond_vector); this one is {module.condition.describe()}. Pick one of those.")
    require_images(images)
    data = run_data(module, required=True)  # the regressor is trained on it
    regressor, _, _ = load_or_train_classifier(data, cache_dir, epochs=epochs, seed=seed, target="cond")
    return read_values(Regressor(regressor), images, data)


def regressor_values(path: str | Path, images: Sequence[str | Path]) -> list[dict[str, float]]:
    """{column: raw value} for each image file, read by the `model=regressor` checkpoint `path`."""
    return read_values(load(path, key="checkpoint", device="cpu", expect=Regressor), images)


def is_regressor(path: str | Path) -> bool:
    """Whether a checkpoint file holds a `model=regressor` (read as data; nothing is built)."""
    if not Path(path).is_file():
        return False
    ckpt = read_checkpoint(path, key="checkpoint")
    return issubclass(stored_model_class(ckpt, path, "checkpoint"), RegressorModule)
