"""img2img / inpaint inputs go through the run's own data preprocessing (ROI crop, resize), recorded in samples.json."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_NET
from fakes import fake_csv
from PIL import Image

import difflab
from difflab.api.sampling import SampleOptions, build_edit
from difflab.cli.sample import run as sample_py
from difflab.data.csv_table import CSVDataModule
from difflab.utils.pnginfo import read_text

ROI = [10, 5, 10, 20]  # top, left, height, width: the grey block of fake_csv's images


def _module(data: dict) -> SimpleNamespace:
    return SimpleNamespace(run_config={"data": data}, image_shape=(3, 8, 8), latent_shape=(3, 8, 8))


def test_an_edit_input_is_roi_cropped_like_the_training_images(tmp_path: Path) -> None:
    csv = fake_csv(tmp_path / "csv", n=6)
    data = {"_target_": "difflab.data.csv_table.CSVDataModule", "csv": str(csv), "roi": ROI, "resolution": 8,
            "val_fraction": 0.2}
    dm = CSVDataModule(csv=str(csv), roi=ROI, resolution=8, val_fraction=0.2)
    dm.setup()
    train = dm.split_dataset("train")
    i = next(k for k, f in enumerate(train.files) if f != "img0.png")  # a grey ROI (img0's is black)
    name = train.files[i]
    options = SampleOptions(mode="img2img", n=2, init_image=str(csv.parent / name), strength=0.5)
    edit, record = build_edit(_module(data), options, options.n)
    torch.testing.assert_close(edit.init[0], train[i]["image"])  # exactly what training saw for this file
    level = int(name.removeprefix("img").removesuffix(".png")) * 10  # the ROI is uniform: the off-ROI black is gone
    torch.testing.assert_close(edit.init, torch.full((2, 3, 8, 8), level / 127.5 - 1))
    assert record["preprocessing"] == {"data": "table", "resolution": 8, "roi": ROI, "center_crop": False,
                                       "resize": "bicubic"}
    assert record["strength"] == 0.5 and record["init_image"].endswith(name)

    centred, plain = build_edit(_module({"name": "prompts"}), options, options.n)  # no data module: a centre crop
    assert plain["preprocessing"]["center_crop"] and not torch.allclose(centred.init, edit.init)


def test_an_input_outside_the_roi_names_the_key(tmp_path: Path) -> None:
    csv = fake_csv(tmp_path / "csv", n=4)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    data = {"_target_": "difflab.data.csv_table.CSVDataModule", "csv": str(csv), "roi": ROI, "resolution": 8}
    options = SampleOptions(mode="img2img", n=1, init_image=str(tmp_path / "small.png"), strength=0.5)
    with pytest.raises(ValueError, match="(?s)small.png.*ROI.*`init_image`"):
        build_edit(_module(data), options, options.n)


def test_paste_back_writes_the_whole_photograph_beside_the_crop(tmp_path: Path) -> None:


    csv = fake_csv(tmp_path / "csv", n=8)
    run = difflab.train(["model=cond_vector", "model.net.emb_channels=32", "data=csv", f"data.csv={csv}",
                         "data.columns=[x1,x2,x3,x4,x5,x6,x7,x8]",
                         f"data.roi=[{','.join(map(str, ROI))}]", "data.resolution=8", "data.val_fraction=0.25",
                         "debug=fast", "logger=csv", "metrics=none", f"paths.root_dir={tmp_path}", *TINY_NET],
                        run_dir=tmp_path / "run")
    photo = csv.parent / "img5.png"
    out = tmp_path / "edit"
    cond = "cond={" + ", ".join(f"x{j}: {5 + j / 10}" for j in range(1, 9)) + "}"  # img5's own values
    cfg = difflab.compose([f"ckpt={run.last_ckpt}", "mode=img2img", f"init_image={photo}", "strength=0.5", "n=2", cond,
                           "sampler=ddim", "sampler.steps=4", "paste_back=true", "paste_back_blend=2",
                           f"out_dir={out}"], config="sample", run_dir=out)
    record = sample_py(cfg)["record"]
    assert record["paste_back"] == {"roi": ROI, "blend": 2}
    with Image.open(photo) as img:
        original = np.asarray(img.convert("RGB"))
    with Image.open(out / "pasted" / "000001.png") as img:
        pasted = np.asarray(img.convert("RGB"))
    assert pasted.shape == original.shape  # the whole 40 x 30 photograph
    top, left, height, width = ROI
    outside = np.ones(original.shape[:2], dtype=bool)
    outside[top : top + height, left : left + width] = False
    assert np.array_equal(pasted[outside], original[outside])  # untouched outside the ROI
    assert not np.array_equal(pasted[~outside], original[~outside])  # the edit inside it
    assert "Denoising strength: 0.5" in read_text(out / "pasted" / "000001.png")
    assert (out / "images" / "000001.png").is_file()  # the crop, as before
