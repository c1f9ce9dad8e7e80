"""Settings in every image: the `parameters` chunk of sample.py's, evaluate's and the training's PNGs, and
`sample.py from_png=<image>` rebuilding the request (bit for bit), a web UI PNG's settings, and keys given beside it.
One tiny vector-conditioned checkpoint (the session's studio run: shapes, 8 px) serves the module."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import difflab
from difflab.api.overrides import request_overrides
from difflab.api.pnginfo import png_request, with_png_request
from difflab.api.sampling import SampleOptions
from difflab.cli.sample import run
from difflab.evaluation.image_record import REQUEST, image_parameters
from difflab.samplers import SamplerSpec
from difflab.utils.pnginfo import Parameters, read_text

REPO = Path(__file__).resolve().parents[3]
COND = {"cx": 0.3, "cy": 0.5, "size": 0.1, "aspect": 1.0, "r": 0.7, "g": 0.7, "b": 0.7, "background": 0.15}
COND_ARG = "cond={" + ", ".join(f"{k}: {v}" for k, v in COND.items()) + "}"
WEBUI = ("a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, "
         "Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")


def sample_py(overrides: list[str], out: Path) -> dict[str, Any]:
    return run(difflab.compose([*overrides, f"out_dir={out}"], config="sample", run_dir=out))


@pytest.fixture(scope="module")
def first(studio_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """sample.py with a stochastic sampler, two batches, a vector condition and guidance."""
    out = tmp_path_factory.mktemp("pnginfo") / "first"
    sample_py([f"ckpt={studio_run['ckpt']}", "sampler=euler_a", "sampler.steps=3", "n=3", "batch_size=2", "seed=5",
               COND_ARG, "guidance_scale=2.5"], out)
    return {"out": out, "ckpt": studio_run["ckpt"]}


def test_every_image_of_sample_py_carries_its_settings(first: dict[str, Any]) -> None:
    params = Parameters.parse(read_text(first["out"] / "images" / "000001.png"))
    fields = params.fields
    assert (fields["Steps"], fields["Sampler"], fields["CFG scale"], fields["Seed"], fields["Size"]) == \
        ("3", "Euler a", "2.5", "5", "8x8")
    assert fields["Model hash"] == hashlib.sha256(first["ckpt"].read_bytes()).hexdigest()[:10]
    assert fields["Image index"] == "1" and params.json("Condition") == pytest.approx(COND)
    assert params.json("Sampler settings") == {"name": "euler_a", "steps": 3, "eta": 1.0, "clip_denoised": True}
    request = params.json(REQUEST)
    assert (request["n"], request["batch_size"], request["seed"], request["cond"]) == (3, 2, 5, COND)
    assert request["ckpt"] == str(first["ckpt"].resolve())
    assert read_text(first["out"] / "grid.png") == read_text(first["out"] / "images" / "000000.png")


def test_from_png_reproduces_the_image_bit_for_bit(first: dict[str, Any], tmp_path: Path) -> None:
    source = first["out"] / "images" / "000002.png"
    done = sample_py([f"from_png={source}"], tmp_path / "again")
    assert done["record"]["from_png"] == {"file": str(source.resolve()), "index": 2, "identical": True}
    for i in range(3):
        name = f"images/{i:06d}.png"
        assert (tmp_path / "again" / name).read_bytes() == (first["out"] / name).read_bytes(), name


def test_keys_given_beside_from_png_win(first: dict[str, Any], tmp_path: Path) -> None:
    source = first["out"] / "images" / "000002.png"
    done = sample_py([f"from_png={source}", "sampler.steps=4"], tmp_path / "changed")
    record = done["record"]
    assert record["sampler"]["steps"] == 4 and record["sampler"]["name"] == "euler_a" and record["seed"] == 5
    assert record["from_png"]["identical"] is False  # another request: said, not hidden
    cfg = difflab.compose([f"from_png={source}", "sampler=ddim", "n=1", "cond={cx: 0.9}"], config="sample",
                          run_dir=tmp_path / "composed")
    assert (cfg.sampler.name, cfg.sampler.steps, cfg.sampler.eta, cfg.n, dict(cfg.cond)) == ("ddim", 50, 0.0, 1,
                                                                                         {"cx": 0.9})
    assert (cfg.seed, cfg.guidance_scale, cfg.batch_size) == (5, 2.5, 2)  # the rest is the PNG's


def test_a_web_ui_png_gives_its_settings(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("parameters", WEBUI)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "webui.png", pnginfo=info)
    found = png_request(tmp_path / "webui.png")
    assert not found.exact and found.index is None
    assert found.request == {"n": 1, "seed": 42, "prompt": "a photo of a cat", "negative_prompt": "blurry",
                             "guidance_scale": 7.0, "sampler": {"name": "dpmpp_2m", "steps": 20, "grid": "karras"}}
    assert found.unused == ["Size", "Model hash", "Model", "Version"]  # named in sample.py's warning
    overrides = with_png_request([f"from_png={tmp_path / 'webui.png'}", "ckpt=model.ckpt"])
    assert overrides[:3] == ["sampler=dpmpp_2m", "++sampler.steps=20", '++sampler.grid="karras"']
    cfg = difflab.compose(overrides, config="sample", run_dir=tmp_path / "out")
    assert (cfg.sampler.name, cfg.sampler.grid, cfg.sampler.steps, cfg.seed, cfg.n) == ("dpmpp_2m", "karras", 20, 42, 1)
    assert (cfg.prompt, cfg.negative_prompt, cfg.guidance_scale, cfg.ckpt) == ("a photo of a cat", "blurry", 7.0,
                                                                               "model.ckpt")


BROKEN_RATE_ONLY = {name: False for name in ("fid", "kid", "inception_score", "lpips_diversity", "clip_score",
                                               "condition_accuracy", "cond_mae")}  # no weights needed


def test_evaluate_and_the_training_write_their_settings_too(studio_run: dict[str, Path], tmp_path: Path) -> None:
    grids = sorted((studio_run["run_dir"] / "metrics").glob("*.png"))
    assert grids
    for grid in grids:  # the training's metric pass: its grid and the gallery strip
        fields = Parameters.parse(read_text(grid)).fields
        assert fields["Seed"] == "1" and fields["Step"] == "1" and "Condition" in fields and "Run" in fields
    model = difflab.load(studio_run["ckpt"])
    model.evaluate(BROKEN_RATE_ONLY, n=2, out_dir=tmp_path / "eval", sampler="ddim", steps=2)
    params = Parameters.parse(read_text(tmp_path / "eval" / "images" / "000001.png"))
    assert (params.fields["Sampler"], params.fields["Steps"], params.fields["Image index"]) == ("DDIM", "2", "1")
    assert params.json("Condition").keys() == COND.keys() and REQUEST not in params.fields


def test_samples_saved_from_python_carry_the_request(studio_run: dict[str, Path], tmp_path: Path) -> None:
    model = difflab.load(studio_run["ckpt"])
    samples = model.sample(2, sampler="DPM++ 2M Karras", steps=2, seed=9, cond=COND)
    samples.save(tmp_path / "api")
    request = Parameters.parse(read_text(tmp_path / "api" / "images" / "000001.png")).json(REQUEST)
    assert request["sampler"]["grid"] == "karras" and request["seed"] == 9 and request["n"] == 2
    done = sample_py([f"from_png={tmp_path / 'api' / 'images' / '000001.png'}"], tmp_path / "cli")
    assert done["record"]["from_png"]["identical"] is True
    assert json.loads((tmp_path / "cli" / "samples.json").read_text())["from_png"]["index"] == 1


def test_a_requests_loras_compose_again(tmp_path: Path) -> None:
    options = SampleOptions(lora=["/models/style.safetensors:0.8", "/models/detail.safetensors"])
    request = options.request(SamplerSpec("ddim", steps=4), {"ckpt": "/runs/m.ckpt"})
    assert request["lora"] == [{"path": "/models/style.safetensors", "weight": 0.8},
                               {"path": "/models/detail.safetensors", "weight": 1.0}]
    overrides = request_overrides(json.loads(json.dumps(request)))  # as the PNG's `Request` JSON carries it
    cfg = difflab.compose(overrides, config="sample", run_dir=tmp_path / "out")
    assert SampleOptions.from_config(cfg).lora == options.lora


@pytest.mark.slow
def test_the_documented_command_reproduces_from_the_command_line(first: dict[str, Any], tmp_path: Path) -> None:
    source = first["out"] / "images" / "000002.png"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, str(REPO / "sample.py"), f"from_png={source}", f"out_dir={tmp_path / 'again'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reproduces" in done.stdout + done.stderr and "bit for bit" in done.stdout + done.stderr
    assert json.loads((tmp_path / "again" / "samples.json").read_text())["from_png"]["identical"] is True


def test_merged_loras_are_named_with_their_hashes(tmp_path: Path) -> None:
    (tmp_path / "style.safetensors").write_bytes(b"lora" * 100)
    applied = [{"path": str(tmp_path / "style.safetensors"), "weight": 0.8, "name": "style"},
               {"path": str(tmp_path / "gone.safetensors"), "weight": 1.0, "name": "gone"}]  # no file: no hash
    module = SimpleNamespace(lora_patch=SimpleNamespace(applied=applied), image_shape=(3, 8, 8))
    fields = Parameters.parse(image_parameters(module, seed=3, index=0).text()).fields
    assert fields["Lora hashes"] == f"style: {hashlib.sha256(b'lora' * 100).hexdigest()[:10]}"
    assert (fields["Seed"], fields["Size"]) == ("3", "8x8") and "Lora hashes" not in Parameters.parse(
        image_parameters(SimpleNamespace(image_shape=(3, 8, 8)), seed=3).text()).fields
