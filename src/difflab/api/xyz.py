"""X/Y/Z grids: one sample.py request drawn over up to three axes of its keys, the same noise in every cell.

`python sample.py ckpt=... n=1 xyz='{sampler: [euler, "DPM++ 2M Karras"], sampler.steps: [5, 10, 20],
guidance_scale: [1, 4]}'`: the first key is X (the columns), the second Y (the rows), the third Z (one grid each).
Any sample.py key of the request can be an axis (`sampler`, `sampler.<field>`, `guidance_scale`, `cond`,
`class_label`, `prompt`, `strength`, `seed`, ...; `ckpt`, `use_ema` and `scheduler.<field>` load one model per
value). Each cell is the base request with the cell's values (`cell_config`), checked as a `SampleOptions` before any
model is loaded, and drawn with the base seed (unless `seed` is an axis): every cell starts from the same noises.
A sampler axis keeps the base request's `sampler.steps` and `sampler.grid` when it sets them (as the web UI's Steps
and Schedule type stay when its sampler changes), unless a web UI name brings its own grid.

Writes `cells/<z>-<y>-<x>/` (each a sample folder: images with their parameters, grid.png, samples.json),
`xyz.png` (or `xyz-<z>.png` per Z value: labelled grids) and `xyz.json` (the axes and each cell's record). The studio's
X/Y/Z plot runs the same `run_xyz`.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from PIL import Image, ImageDraw, ImageFont

from difflab.api import checks
from difflab.api.config import group_option, sampler_spec
from difflab.api.models import model_key
from difflab.api.samples import Samples
from difflab.api.sampling import SampleOptions
from difflab.errors import ConfigError, UserError
from difflab.samplers.aliases import resolve
from difflab.utils.files import write_json
from difflab.utils.images import png_pixels, to_uint8_grid, write_uint8
from difflab.utils.pnginfo import Parameters, value_text

log = logging.getLogger(__name__)

KEY = "xyz"
NAMES = ("X", "Y", "Z")
EXAMPLE = "xyz='{sampler: [euler, heun], sampler.steps: [5, 10], guidance_scale: [1, 4]}'"
NOT_AXES = {"out_dir", "overwrite", "resume", "save_images", "xyz", "from_png", "paths", "logger", "hydra",
            "task_name", "device", "model", "pipeline"}
CELL = 128  # the shorter side cells are enlarged to (whole multiples, nearest), so small images stay readable


@dataclass
class Axis:
    """One axis: a sample.py key and its values."""

    key: str
    values: list[Any]

    def label(self, value: Any) -> str:
        """How the grid names one of its values: `key: value`."""
        return f"{self.key}: {value_text(value)}"


@dataclass
class Cell:
    """One cell: its position (x, y, z), its values, its config and its checked request."""

    at: tuple[int, int, int]
    values: dict[str, Any]
    cfg: DictConfig
    options: SampleOptions

    @property
    def folder(self) -> str:
        return "cells/{2}-{1}-{0}".format(*self.at)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def parse_axes(spec: Any, cfg: DictConfig) -> list[Axis]:
    """The axes of `xyz` (a mapping of up to three sample.py keys to lists of values, or its YAML text), each key
    checked to be a key of the request in `cfg`."""
    spec = _plain(spec)
    if isinstance(spec, str):
        try:
            spec = yaml.safe_load(spec)
        except yaml.YAMLError as err:
            raise ConfigError.bad_value(KEY, f"{spec!r} is not YAML ({err})", f"Pass {EXAMPLE}.") from None
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError.bad_value(KEY, f"{spec!r} is not a mapping of keys to lists of values", f"Pass {EXAMPLE}.")
    if len(spec) > len(NAMES):
        raise ConfigError.bad_value(KEY, f"{len(spec)} axes ({', '.join(map(str, spec))}); a grid has at most three "
                                    "(X, Y, Z)", f"Pass up to three keys, e.g. {EXAMPLE}.")
    axes = []
    for name, values in spec.items():
        name = str(name)
        root = name.split(".", 1)[0]
        known = name.startswith(("sampler.", "scheduler.")) or OmegaConf.select(cfg, name, default=KeyError) is not KeyError
        if root in NOT_AXES or not known:
            raise ConfigError.bad_value(KEY, f"{name!r} is not a key of the request an axis can vary",
                                        "Use sample.py's request keys: sampler, sampler.<field>, guidance_scale, seed, "
                                        "cond, class_label, prompt, strength, ckpt, scheduler.<field>, ...")
        if not isinstance(values, list) or not values:
            raise ConfigError.bad_value(KEY, f"the values of {name!r} are {values!r}, not a list of values",
                                        f"Give each key a list, e.g. {name}: [a, b].")
        axes.append(Axis(name, values))
    return axes


def parse_values(text: str) -> list[Any]:
    """An axis's values typed as text (the studio): a YAML list (`[euler, "DPM++ 2M Karras"]`) or comma-separated
    values, each read as YAML (numbers as numbers)."""
    text = str(text or "").strip()
    try:
        values = yaml.safe_load(text) if text.startswith("[") else [yaml.safe_load(v) for v in text.split(",")]
    except yaml.YAMLError as err:
        raise ConfigError.bad_value(KEY, f"the values {text!r} are not a list ({err})", "Type them as `a, b, c` or "
                                    "[a, b, c].") from None
    if not isinstance(values, list) or not values or any(v is None for v in values):
        raise ConfigError.bad_value(KEY, f"the values {text!r} are not a list of values", "Type them as `a, b, c`.")
    return values


def cell_config(cfg: DictConfig, values: Mapping[str, Any]) -> DictConfig:
    """The base config with one cell's values: `sampler` composes that sampler's preset (keeping the base steps and
    grid), every other key replaces its value."""
    cell = copy.deepcopy(cfg)
    with open_dict(cell):
        cell.xyz = None
        if "sampler" in values:
            name, grid = resolve(str(values["sampler"]))
            node = group_option("sampler", name)
            base = cfg.get("sampler") or {}
            for field, given in (("steps", base.get("steps")), ("grid", grid or base.get("grid"))):
                if given is not None:
                    node[field] = given
            cell.sampler = node
        for name, value in values.items():
            if name != "sampler":
                OmegaConf.update(cell, name, value, force_add=True)
    return cell


def plan(cfg: DictConfig) -> tuple[list[Axis], list[Cell]]:
    """The axes and every cell of `cfg.xyz`, each cell's request checked (before any model is loaded); the base seed
    is resolved once (seed=-1: one random seed for all cells)."""
    axes = parse_axes(cfg.xyz, cfg)
    base = SampleOptions.from_config(cfg)
    sizes = [len(a.values) for a in axes] + [1] * (len(NAMES) - len(axes))
    cells = []
    for z, y, x in itertools.product(range(sizes[2]), range(sizes[1]), range(sizes[0])):
        at = (x, y, z)
        values = {a.key: _plain(a.values[at[i]]) for i, a in enumerate(axes)}
        try:
            cfg_cell = cell_config(cfg, {"seed": base.seed, **values} if "seed" not in values else values)
            options = SampleOptions.from_config(cfg_cell)
        except UserError as err:
            shown = ", ".join(f"{k}={value_text(v)}" for k, v in values.items())
            raise type(err)(f"In the `xyz` cell {shown}: {err}") from None
        cells.append(Cell(at, values, cfg_cell, options))
    return axes, cells


def run_xyz(cfg: DictConfig, out: Path, load: Callable[[DictConfig], Any], callback: Any = None) -> dict[str, Any]:
    """Draw every cell of `cfg.xyz` into `out` (a checked, empty folder) with the model `load(cell config)` gives
    (called once per distinct model), write the labelled grids and xyz.json; returns the record."""
    axes, cells = plan(cfg)
    models: dict[str, Any] = {}
    drawn: list[tuple[Cell, Samples]] = []
    for cell in cells:
        key = model_key(cell.cfg)
        if key not in models:
            models[key] = load(cell.cfg)
        model = models[key]
        changes = checks.own_sampler_changes(cell.cfg.get("sampler"))  # sampler.steps without sampler=
        if changes:
            cell.options.sampler = sampler_spec(model.sampler, **changes)
        samples = model.draw(cell.options, callback=callback)
        samples.write_files(checks.fresh_output(out / cell.folder, "out_dir", False))
        drawn.append((cell, samples))
    grids = write_grids(out, axes, drawn)
    record = {"axes": [{"key": a.key, "values": a.values} for a in axes], "seed": cells[0].options.seed,
              "grids": [g.name for g in grids],
              "cells": [{"x": c.at[0], "y": c.at[1], "z": c.at[2], "values": c.values, "folder": c.folder,
                         "nfe": s.nfe, "sampler": s.record.get("sampler"), "seed": s.record.get("seed")}
                        for c, s in drawn]}
    write_json(out / "xyz.json", record)
    log.info("wrote %d cells and %s", len(drawn), ", ".join(str(g) for g in grids))
    return {**record, "out_dir": out, "grid_files": grids}


def write_grids(out: Path, axes: list[Axis], drawn: list[tuple[Cell, Samples]]) -> list[Path]:
    """One labelled grid per Z value (`xyz.png`, or `xyz-<z>.png`), with the first cell's parameters and the axes."""
    files = []
    zs = axes[2].values if len(axes) > 2 else [None]
    for z, zvalue in enumerate(zs):
        part = [(c, s) for c, s in drawn if c.at[2] == z]
        columns = len(axes[0].values)
        rows = [[cell_image(s) for _, s in part[i : i + columns]] for i in range(0, len(part), columns)]
        title = axes[2].label(zvalue) if zvalue is not None else ""
        ylabels = [axes[1].label(v) for v in axes[1].values] if len(axes) > 1 else [""]
        grid = labelled_grid(rows, [axes[0].label(v) for v in axes[0].values], ylabels, title)
        params = Parameters.parse(part[0][1].text(0) or "")
        params.fields["X/Y/Z"] = {n: {"key": a.key, "values": a.values} for n, a in zip(NAMES, axes)}
        name = "xyz.png" if len(zs) == 1 else f"xyz-{z}.png"
        files.append(write_uint8(grid, out / name, params))
    return files


def cell_image(samples: Samples) -> np.ndarray:
    """A cell's picture: its image (several: their grid), uint8 [H, W, 3], enlarged to about `CELL` pixels."""
    images = samples.images
    array = to_uint8_grid(images).permute(1, 2, 0).numpy() if len(images) > 1 else png_pixels(images[0])
    array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array
    scale = max(1, CELL // max(1, min(array.shape[:2])))
    return array.repeat(scale, axis=0).repeat(scale, axis=1)


def labelled_grid(cells: list[list[np.ndarray]], xlabels: list[str], ylabels: list[str], title: str = "",
                  gap: int = 4) -> np.ndarray:
    """Cells [rows][columns] (uint8 [h, w, 3], all one size) on white, with the X labels above the columns, the Y
    labels left of the rows and a title above: the X/Y/Z grid's layout (sample.py's and the studio's)."""
    font = ImageFont.load_default(size=14)
    h, w = cells[0][0].shape[:2]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width_of = lambda text: measure.textbbox((0, 0), text, font=font)[2]
    left = max([width_of(t) for t in ylabels] + [0]) + (2 * gap if any(ylabels) else 0)
    xwrapped = [_wrap(t, w, width_of) for t in xlabels]
    line = 18
    head = 2 * line if title else 0  # the title and a blank line, so that it reads apart from the X labels
    top = head + line * max(len(t) for t in xwrapped) + gap
    canvas = Image.new("RGB", (left + len(xlabels) * (w + gap), top + len(cells) * (h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left, 0), title, fill="black", font=font)
    for i, lines in enumerate(xwrapped):
        for k, text in enumerate(lines):
            draw.text((left + i * (w + gap), head + k * line), text, fill="black", font=font)
    for j, row in enumerate(cells):
        y = top + j * (h + gap)
        if j < len(ylabels):
            draw.text((gap, y + h // 2 - line // 2), ylabels[j], fill="black", font=font)
        for i, image in enumerate(row):
            canvas.paste(Image.fromarray(image), (left + i * (w + gap), y))
    return np.asarray(canvas)


def _wrap(text: str, width: int, width_of: Callable[[str], int]) -> list[str]:
    """`text` broken into lines no wider than `width` pixels (at spaces; a long word alone on its line)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and width_of(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


__all__ = ["Axis", "Cell", "cell_config", "labelled_grid", "parse_axes", "parse_values", "plan", "run_xyz"]
