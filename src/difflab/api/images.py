"""Image files as model inputs: preprocessed as the checkpoint's own training images were (ROI crop, resize).

img2img / inpainting inputs, predict.py's images and the studio's uploads all come through `load_image`, with the
data module of the checkpoint's run (`run_data`) when it can be built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from difflab.data.files import (
    EXTENSIONS,
    CorruptImageError,
    DataNotFoundError,
    ImageFileDataset,
    list_images,
    to_model_range,
)
from difflab.errors import ConfigError, IncompatibleCheckpointError, user_message
from difflab.utils.stored_config import UntrustedTargetError, instantiate_stored

log = logging.getLogger(__name__)


def run_data(module: Any, required: bool = False) -> Any:
    """The data module of the checkpoint's run (how it preprocesses image files: ROI crop, resize), or None when
    the checkpoint names none (e.g. model=sd) or it cannot be built here (then files are centre-cropped); with
    `required`, both are errors."""
    data = (module.run_config or {}).get("data") or {}
    if "_target_" not in data:
        if required:
            raise IncompatibleCheckpointError("The checkpoint records no data module, so its preprocessing (ROI crop, "
                                              "resize) is unknown: use a checkpoint written by python train.py.")
        return None
    try:
        return instantiate_stored(data, getattr(module, "checkpoint_path", "the checkpoint"), "data")
    except UntrustedTargetError:
        raise  # a hostile config is never worked around
    except Exception as err:  # its training data may live on another machine
        if user_message(err) is None:
            raise
        if required:
            raise ConfigError(f"Images are preprocessed as the checkpoint's training images, and its data module "
                              f"cannot be built here: {user_message(err)}") from None
        log.warning("edit inputs are centre-cropped: the run's data module cannot be built here (%s)", user_message(err))
        return None


def load_image(path: str, key: str, datamodule: Any, channels: int, resolution: int) -> torch.Tensor:
    """An image file as [1, C, R, R] in [-1, 1], preprocessed as the run's training images were (the data module's
    ROI crop and resize; a centre crop without one); clear errors name the key."""
    file = Path(path or "")
    if not path or not file.is_file():
        raise DataNotFoundError.for_path(path, key, f"`{key}` must name an image file.", "Image")
    dataset = (datamodule.file_dataset(file, channels) if datamodule is not None
               else ImageFileDataset(file.parent, [file.name], None, resolution, channels, center_crop=True))
    try:
        return to_model_range(dataset.load(0)[None])
    except CorruptImageError as err:
        raise CorruptImageError(f"{err} (config key `{key}`)") from None


def check_paste_back(datamodule: Any, path: Any, blend: int) -> dict[str, Any]:
    """What paste_back=true needs, checked before sampling: a run whose data crops its photographs (data=csv with
    data.roi), an edit input that is a file, and a blend width that fits in the ROI; returns samples.json's record."""
    roi = getattr(datamodule, "roi", None)
    if datamodule is None or not hasattr(datamodule, "paste_back") or roi is None:
        raise ConfigError.bad_value("paste_back", "true puts the edited region of interest back into its photograph, "
                                    "and this checkpoint's data crops no region of interest (no data.roi)",
                                    "Leave paste_back out, or edit with a model trained on data=csv "
                                    "data.roi=[top,left,height,width].")
    if not isinstance(path, (str, Path)):
        raise ConfigError.bad_value("paste_back", "true needs the photograph as a file (init_image=<file>), not a "
                                    "tensor", "Pass init_image=<the photograph the ROI was cropped from>.")
    half = min(int(roi[2]), int(roi[3])) // 2
    if blend > half:
        raise ConfigError.bad_value("paste_back_blend", f"{blend} pixels is more than half the ROI's shorter side "
                                    f"({half} of {list(roi)})", f"Pass paste_back_blend=<0 to {half}>.")
    return {"paste_back": {"roi": list(roi), "blend": blend}}


PREPROCESS = ("auto", "true", "false")


def is_model_sized(file: Path, resolution: int) -> bool:
    """Whether an image file is resolution x resolution (the size generated images have); False when unreadable."""
    try:
        with Image.open(file) as img:
            return img.size == (resolution, resolution)
    except Exception:  # the loader reports it with the file's name
        return False


def read_images(files: list[Path], datamodule: Any, module: Any, preprocess: str) -> torch.Tensor:
    """Images [N, C, R, R] in [-1, 1]: through the regressor's data module as its training images were (ROI crop,
    resize; `sample.load_image`), or as they are when already in the model's space (`preprocess=false`, or `auto`
    for files of R x R pixels, the size sample.py writes)."""
    channels, resolution = module.image_shape[0], module.image_shape[-1]
    as_is = [preprocess == "false" or (preprocess == "auto" and is_model_sized(f, resolution)) for f in files]
    return torch.cat([load_image(str(f), "images", None if keep else datamodule, channels, resolution)
                      for f, keep in zip(files, as_is)])


def folder_images(folder: Path) -> list[Path]:
    """The image files of `images=<folder>`; a clear error when the folder is missing or holds none."""
    if not folder.exists():
        raise DataNotFoundError.for_path(folder, "images", "Pass images=<folder of generated PNG/JPEG files>.", "Images")
    files = list_images(folder, EXTENSIONS)
    if not files:
        raise DataNotFoundError.for_path(folder, "images", f"The folder holds no {'/'.join(EXTENSIONS)} files.", "Images")
    return files
