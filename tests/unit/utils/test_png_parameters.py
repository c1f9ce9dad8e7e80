"""The `parameters` chunk in the Stable Diffusion web UI's layout: its own example read as the web UI reads it, every
value written back as the web UI writes it, and the chunk in the PNGs `write_png` / `save_grid` write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from difflab.utils.images import read_png, save_grid, write_png
from difflab.utils.pnginfo import Parameters, model_hash, quote, read_text, unquote

# what the web UI v1.10.1 writes for a txt2img image of SD 1.5 (modules/processing.py create_infotext)
WEBUI = ("a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, "
         "Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")


def test_the_web_uis_own_string_reads_as_the_web_ui_reads_it() -> None:
    params = Parameters.parse(WEBUI)
    assert params.prompt == "a photo of a cat" and params.negative_prompt == "blurry"
    assert params.fields == {"Steps": "20", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7",
                             "Seed": "42", "Size": "512x512", "Model hash": "6ce0161689",
                             "Model": "v1-5-pruned-emaonly", "Version": "v1.10.1"}
    assert params.text() == WEBUI  # and is written back byte for byte


# a web UI v1.9.4 inpainting image's settings as published with it (quoted here only to split the line)
WEBUI_INPAINT = ("product shoot in sand with beach elements, warm weather, studio lighting\nNegative prompt: incomplete "
                 "elements\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 8, Seed: 1659960289, "
                 "Size: 985x1266, Model hash: b513c6287d, Model: realism_engine, Denoising strength: 0.91, "
                 "Masked content: fill, Version: v1.9.4")


def test_a_published_web_ui_string_reads_and_writes_back_the_same() -> None:
    params = Parameters.parse(WEBUI_INPAINT)
    assert params.prompt.startswith("product shoot") and params.negative_prompt == "incomplete elements"
    assert list(params.fields) == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash",
                                   "Model", "Denoising strength", "Masked content", "Version"]
    assert (params.fields["Seed"], params.fields["Denoising strength"]) == ("1659960289", "0.91")
    assert params.text() == WEBUI_INPAINT


def test_values_with_commas_colons_and_newlines_are_json_strings_as_in_the_web_ui() -> None:
    assert quote("plain") == "plain" and quote(7.0) == "7" and quote(7.5) == "7.5" and quote(True) == "true"
    assert quote("a, b") == '"a, b"' and quote('x: "y"') == '"x: \\"y\\""' and quote({"x1": 0.3}) == '"{\\"x1\\": 0.3}"'
    assert unquote('"a, b"') == "a, b" and unquote("plain") == "plain" and unquote('"broken') == '"broken'
    params = Parameters("line one\nline two, (cat:1.4)", "ugly\nblurry",
                        {"Steps": 5, "Lora hashes": "a: 1, b: 2", "Condition": '{"cx":0.3,"size":1.0}', "Skip": None,
                         "Seed": 3})
    back = Parameters.parse(params.text())
    assert back.prompt == params.prompt and back.negative_prompt == params.negative_prompt
    assert back.fields == {"Steps": "5", "Lora hashes": "a: 1, b: 2", "Condition": '{"cx":0.3,"size":1.0}', "Seed": "3"}
    assert back.json("Condition") == {"cx": 0.3, "size": 1.0} and back.json("Nope") is None


def test_a_text_without_pairs_is_all_prompt() -> None:
    params = Parameters.parse("just a prompt\nNegative prompt: and a negative one")
    assert (params.prompt, params.negative_prompt, params.fields) == ("just a prompt", "and a negative one", {})


def test_write_png_and_save_grid_carry_the_chunk_and_the_same_pixels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = torch.rand(3, 3, 5, 4) * 2 - 1
    plain, tagged = write_png(images[0], tmp_path / "plain.png"), write_png(images[0], tmp_path / "tagged.png", WEBUI)
    assert read_text(plain) is None and read_text(tagged) == WEBUI
    with Image.open(tagged) as img:
        assert img.info["parameters"] == WEBUI  # where the web UI's PNG Info tab reads it
    torch.testing.assert_close(read_png(tagged, 3), read_png(plain, 3))
    expected = ((images[0].clamp(-1, 1) + 1) / 2 * 255 + 0.5).floor().clamp(0, 255)  # torchvision's save_image rounding
    torch.testing.assert_close(read_png(tagged, 3), expected / 127.5 - 1)
    grid = save_grid(images, tmp_path / "grid.png", nrow=3, parameters=Parameters("p", "", {"Seed": 1}))
    assert read_text(grid) == "p\nSeed: 1" and not list(tmp_path.glob(".*.tmp"))
    grey = write_png(images[:1, :1, 0], tmp_path / "grey.png", "x")  # one channel: three equal ones, as before
    with Image.open(grey) as img:
        assert img.mode == "RGB"


def test_a_chunk_the_web_ui_wrote_is_read(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("parameters", WEBUI)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "webui.png", pnginfo=info)
    assert read_text(tmp_path / "webui.png") == WEBUI


def test_model_hash_is_the_web_uis_short_sha256(tmp_path: Path) -> None:
    (tmp_path / "m.ckpt").write_bytes(b"weights" * 1000)
    assert model_hash(tmp_path / "m.ckpt") == hashlib.sha256(b"weights" * 1000).hexdigest()[:10]
    assert model_hash(None) is None and model_hash(tmp_path) is None
