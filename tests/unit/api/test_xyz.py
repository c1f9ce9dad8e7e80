"""X/Y/Z grids: axes over any request key, each cell the request with its values and the same noise (so a cell is
what sample.py draws for those values alone), one labelled grid per Z value, the per-cell folders and records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import difflab
from difflab.api.xyz import cell_config, labelled_grid, parse_axes, parse_values, plan
from difflab.cli.sample import run
from difflab.errors import ConfigError
from difflab.utils.images import png_pixels
from difflab.utils.pnginfo import Parameters, read_text

REPO = Path(__file__).resolve().parents[3]
COND = "cond={cx: 0.3, cy: 0.5, size: 0.1, aspect: 1.0, r: 0.7, g: 0.7, b: 0.7, background: 0.15}"


def composed(tmp_path: Path, *overrides: str) -> Any:
    return difflab.compose(["ckpt=model.ckpt", *overrides], config="sample", run_dir=tmp_path / "out")


@pytest.mark.parametrize("spec,needle", [
    ("5", "not a mapping"), ("{}", "not a mapping"), ("{a: [1], b: [1], c: [1], d: [1]}", "at most three"),
    ("{nope: [1, 2]}", "'nope'"), ("{out_dir: [a, b]}", "'out_dir'"), ("{guidance_scale: 3}", "not a list"),
    ("{guidance_scale: []}", "not a list"), ("'{sampler: [euler'", "not YAML")])
def test_bad_axes_name_the_key(tmp_path: Path, spec: str, needle: str) -> None:
    cfg = composed(tmp_path, f"xyz={spec}")
    with pytest.raises(ConfigError, match=f"(?s)`xyz`.*{needle}"):
        parse_axes(cfg.xyz, cfg)


def test_bad_values_name_the_cell_before_anything_is_loaded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="(?s)`xyz` cell guidance_scale=high.*`guidance_scale`"):
        plan(composed(tmp_path, "xyz={guidance_scale: [1, high]}"))
    with pytest.raises(ConfigError, match="(?s)`xyz` cell sampler=dpm_9000.*dpm_9000"):
        plan(composed(tmp_path, "xyz={sampler: [euler, dpm_9000]}"))


def test_a_sampler_axis_keeps_the_base_steps_and_takes_a_web_ui_names_grid(tmp_path: Path) -> None:
    cfg = composed(tmp_path, "sampler=dpmpp_2m", "sampler.steps=7", "xyz={sampler: [euler, 'DPM++ 2M Karras']}")
    euler, karras = (cell_config(cfg, {"sampler": name}) for name in ("euler", "DPM++ 2M Karras"))
    assert (euler.sampler.name, euler.sampler.steps, euler.sampler.grid) == ("euler", 7, None)
    assert (karras.sampler.name, karras.sampler.steps, karras.sampler.grid) == ("dpmpp_2m", 7, "karras")
    steps = cell_config(cfg, {"sampler": "euler", "sampler.steps": 3, "guidance_scale": 4})
    assert (steps.sampler.steps, steps.guidance_scale, steps.xyz) == (3, 4, None)
    _, cells = plan(composed(tmp_path, "seed=-1", "xyz={seed: [1, 2], guidance_scale: [1, 2]}"))
    assert [c.options.seed for c in cells] == [1, 2, 1, 2]
    _, cells = plan(composed(tmp_path, "seed=-1", "xyz={guidance_scale: [1, 2]}"))
    assert cells[0].options.seed == cells[1].options.seed  # seed=-1: one random seed, shared by every cell


def test_values_typed_in_the_studio() -> None:
    assert parse_values("euler, DPM++ 2M Karras") == ["euler", "DPM++ 2M Karras"]
    assert parse_values("5, 10, 20") == [5, 10, 20] and parse_values("[1.5, 'a, b']") == [1.5, "a, b"]
    with pytest.raises(ConfigError, match="`xyz`"):
        parse_values(" ")


def test_the_grid_of_every_z_value_and_the_cells_are_written(studio_run: dict[str, Path], tmp_path: Path) -> None:
    spec = "xyz={sampler: [euler, 'DPM++ 2M Karras'], sampler.steps: [2], guidance_scale: [1, 4]}"
    cfg = difflab.compose([f"ckpt={studio_run['ckpt']}", "n=1", "seed=3", COND, spec, f"out_dir={tmp_path / 'g'}"],
                          config="sample", run_dir=tmp_path / "g")
    done = run(cfg)
    out = tmp_path / "g"
    assert done["grids"] == ["xyz-0.png", "xyz-1.png"] and len(done["cells"]) == 4
    assert json.loads((out / "xyz.json").read_text())["cells"][3]["values"] == {
        "sampler": "DPM++ 2M Karras", "sampler.steps": 2, "guidance_scale": 4}
    model = difflab.load(studio_run["ckpt"])
    cond = {"cx": 0.3, "cy": 0.5, "size": 0.1, "aspect": 1.0, "r": 0.7, "g": 0.7, "b": 0.7, "background": 0.15}
    for cell in done["cells"]:  # each cell is what that request draws alone: the same seed, the same noise
        values = cell["values"]
        alone = model.sample(1, sampler=values["sampler"], steps=values["sampler.steps"], seed=3, cond=cond,
                             guidance_scale=values["guidance_scale"]).images[0]
        with Image.open(out / cell["folder"] / "images" / "000000.png") as img:
            assert np.array_equal(np.asarray(img), png_pixels(alone)), cell
    params = Parameters.parse(read_text(out / "xyz-1.png"))
    assert params.json("X/Y/Z")["Z"] == {"key": "guidance_scale", "values": [1, 4]}
    with Image.open(out / "xyz-0.png") as grid:
        assert grid.size[0] > 2 * 128 and 128 < grid.size[1] < 2 * 128  # two columns, one row of enlarged 8-px cells


def test_the_layout_puts_labels_above_and_left() -> None:
    cell = np.zeros((20, 30, 3), np.uint8)
    grid = labelled_grid([[cell] * 3] * 2, ["a: 1", "a: 2", "a: 3"], ["b: 1", "b: 2"], "c: 9")
    white = (grid == 255).all(-1)
    black_cells = ~white[-24:-4, -34:-4]  # the last cell (a 4-pixel gap after each)
    assert black_cells.all() and grid.shape[0] > 2 * 20 + 18 and grid.shape[1] > 3 * 30
    assert (~white[:18]).any() and (~white[:, :20]).any()  # a title and row labels were drawn


@pytest.mark.slow
def test_the_documented_command_draws_its_grid(studio_run: dict[str, Path], tmp_path: Path) -> None:
    """docs/xyz.md's command as a shell passes it: the quoted web UI name and the dotted key reach the axes."""
    spec = 'xyz={sampler: [euler, "DPM++ 2M Karras"], sampler.steps: [5, 10, 20], guidance_scale: [1, 4]}'
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, str(REPO / "sample.py"), f"ckpt={studio_run['ckpt']}", "n=1", "seed=0",
                           COND, spec, f"out_dir={tmp_path / 'grid'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "grid" / "xyz.json").read_text())
    assert [a["key"] for a in record["axes"]] == ["sampler", "sampler.steps", "guidance_scale"]
    assert record["axes"][0]["values"] == ["euler", "DPM++ 2M Karras"] and len(record["cells"]) == 12
    assert record["grids"] == ["xyz-0.png", "xyz-1.png"] and {c["seed"] for c in record["cells"]} == {0}
