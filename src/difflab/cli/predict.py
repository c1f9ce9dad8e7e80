"""`python predict.py ckpt=<regressor ckpt> images=<folder | csv> out=preds.csv`: the values each image shows.

The regressor (`python train.py model=regressor data=...`) reads every image of a folder (searched recursively)
or every file named in a CSV (its path column: `path_column`, else the regressor's `data.path_column`, `file` or
`filepath`; paths relative to the CSV's folder or `image_root`), preprocessed by the regressor's own data module
exactly as its training images were (ROI crop, resize; `preprocess=auto` takes files of resolution x resolution
pixels, such as sample.py's images, as already in the model's space), and `out` gets one row per image: `file` and one column
per value, in raw units. When the CSV also holds those value columns (a data set's table, or the
`conditions.csv` of `sample.py`), the log reports MAE and R2 of the readings against them.
`difflab-predict` (the console script) is the same command.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from difflab.api import checks
from difflab.api.images import PREPROCESS, folder_images
from difflab.api.models import Regressor, load
from difflab.data.files import DataNotFoundError
from difflab.errors import ConfigError, CorruptFileError, UnwritableOutputError
from difflab.lit.regressor import RegressorModule
from difflab.metrics.regression import VectorErrors
from difflab.utils.entry import hydra_main
from difflab.utils.files import output_path, write_text
from difflab.utils.tables import read_rows

log = logging.getLogger(__name__)

PATH_COLUMNS = ("file", "filepath")  # after the regressor's data.path_column: sample.py's and data=csv's names


def output_file(path: Any, key: str, overwrite: bool, follow_symlinks: bool = False) -> Path:
    """The CSV file to write, checked before the regressor runs by the one output writer's rules (a regular file or
    nothing there, no device, no symbolic link unless `follow_symlinks`, no earlier file unless `overwrite`); its
    folder is created."""
    out = output_path(Path(str(path)), key, overwrite, follow_symlinks)
    checks.writable_folder(out.parent, key)
    return out


def csv_images(table: Path, path_column: str | None, image_root: str | None,
               run_column: str | None) -> tuple[list[str], list[Path], dict[str, list[str]]]:
    """(names as written, files, every column) of a CSV of image paths; errors name the file, row and key."""
    header, lines = read_rows(table, key="images")  # strict: a column named twice or a short row is an error
    rows = [dict(zip(header, values)) for _, values in lines]
    candidates = [path_column] if path_column else [c for c in (run_column, *PATH_COLUMNS) if c]
    column = next((c for c in candidates if c in header), None)
    if column is None:
        raise ConfigError.bad_value("path_column", f"{table} has no column {' or '.join(map(repr, candidates))} of image "
                                    f"paths (its header: {header})", "Pass path_column=<the column of image paths>.")
    if not rows:
        raise CorruptFileError.for_file(table, "no data rows", "Add one row per image.")
    root = Path(image_root).expanduser() if image_root else table.parent
    names = [str(row.get(column) or "").strip() for row in rows]
    absent = [(i + 2, n) for i, n in enumerate(names) if not n or not (root / n).is_file()]
    if absent:
        shown = "; ".join(f"row {line}: '{root / n}'" for line, n in absent[:5])
        raise DataNotFoundError(f"{len(absent)} image file(s) listed in {table} (config key `images`, column "
                                f"'{column}') do not exist: {shown}{' ...' if len(absent) > 5 else ''}. Paths are "
                                "relative to the CSV's folder, or to `image_root` when given.")
    return names, [root / n for n in names], {h: [str(row.get(h) or "") for row in rows] for h in header}


def image_inputs(cfg: DictConfig, module: RegressorModule) -> tuple[list[str], list[Path], dict[str, list[str]]]:
    """(names, files, CSV columns or {}) of `images=<folder | csv>`."""
    source = Path(str(cfg.images)).expanduser()
    if source.is_file() and source.suffix.lower() == ".csv":
        run_column = ((module.run_config or {}).get("data") or {}).get("path_column")
        return csv_images(source, cfg.get("path_column"), cfg.get("image_root"), run_column)
    if source.is_file():
        raise DataNotFoundError.for_path(source, "images", "Pass images=<a folder of images, or a .csv of image paths>.",
                                         "Image folder or CSV")
    for key in ("path_column", "image_root"):
        if cfg.get(key) is not None:
            raise ConfigError(f"Config key `{key}` applies to images=<a CSV>, and images={source} is a folder: remove "
                              f"{key}=... .")
    names = folder_images(source)
    return names, [source / n for n in names], {}


def given_errors(module: RegressorModule, predicted: torch.Tensor, columns: dict[str, list[str]]) -> dict[str, float]:
    """MAE and R2 of the readings against the CSV's own values of the regressor's columns ({} when it lacks any)."""
    if not columns or not all(c in columns for c in module.columns):
        return {}
    try:
        given = torch.tensor([[float(v) for v in columns[c]] for c in module.columns]).T  # (N, D)
    except ValueError:
        return {}
    errors = VectorErrors(module.stats)
    errors.update(predicted, given)
    return errors.flat()


def write_predictions(out: Path, names: list[str], columns: list[str], values: torch.Tensor,
                      follow_symlinks: bool = False) -> Path:
    """`file, <column>...` one row per image, through the one output writer (`difflab.utils.files`: atomic, no
    device or symbolic link as `out`, a full disk named); `output_file` has refused an earlier file already."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["file", *columns])
    for name, row in zip(names, values.tolist()):
        writer.writerow([name, *(f"{v:.6g}" for v in row)])
    return write_text(out, text.getvalue(), key="out", overwrite=True, follow_symlinks=follow_symlinks)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Read the values of every image of `images` with the regressor `ckpt`; returns the output path and the values."""
    if not cfg.get("ckpt"):
        raise ConfigError("Config key `ckpt` is required: pass ckpt=<a regressor checkpoint of python train.py "
                          "model=regressor ..., e.g. runs/train/<run>/checkpoints/last.ckpt>.")
    if not cfg.get("images"):
        raise ConfigError("Config key `images` is required: pass images=<a folder of images, or a .csv of image paths>.")
    batch_size = checks.integer(cfg.batch_size, "batch_size", 1)
    preprocess = str(cfg.get("preprocess", "auto")).lower()
    if preprocess not in PREPROCESS:
        raise ConfigError.bad_value("preprocess", f"{cfg.preprocess!r} is not one of {', '.join(PREPROCESS)}",
                                    "Use auto (files of the model's size as they are), true or false.")
    device = checks.inference_device(cfg.device)
    follow = bool(cfg.get("follow_symlinks", False))
    out = output_file(cfg.out, "out", bool(cfg.get("overwrite", False)), follow)
    model = load(cfg.ckpt, key="ckpt", device=str(device), use_ema=bool(cfg.use_ema), expect=Regressor)
    module = model.module
    names, files, columns = image_inputs(cfg, module)
    if out.resolve() in {Path(str(cfg.images)).expanduser().resolve()}:
        raise UnwritableOutputError(f"`out` names the input CSV '{out}': pass out=<another file>.")
    values = model.predict(files, batch_size=batch_size, preprocess=preprocess)
    write_predictions(out, names, module.columns, values, follow)
    errors = given_errors(module, values, columns)
    log.info("wrote %d rows (%s) to %s", len(names), ", ".join(module.columns), out)
    if errors:
        log.info("against the values in %s: MAE %.4g (raw), %.3f (std units), R2 %.3f; per column R2 %s", cfg.images,
                 errors["mae"], errors["mae_std"], errors["r2"],
                 {c: round(errors[f"r2/{c}"], 3) for c in module.columns})
    return {"out": out, "names": names, "values": values, "errors": errors}


def main() -> None:
    """`predict.py` and the `difflab-predict` console script: the Hydra app of conf/predict.yaml under the error contract."""
    hydra_main("predict", run, __name__)
