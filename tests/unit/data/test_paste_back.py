"""paste_back: an edited region of interest resized back into its whole photograph, with a seam-free blend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import fake_csv
from PIL import Image

from difflab.api.images import check_paste_back
from difflab.data.csv_table import CSVDataModule, paste_roi
from difflab.errors import ConfigError

ROI = [10, 5, 10, 20]  # top, left, height, width: the grey block of fake_csv's 40 x 30 images


def test_the_photograph_is_kept_outside_the_roi_and_the_edit_fills_it() -> None:
    torch.manual_seed(0)
    photo = torch.rand(3, 30, 40) * 2 - 1
    crops = torch.full((2, 3, 8, 8), 0.25)
    crops[1] = -0.5
    out = paste_roi(photo, crops, (5, 10, 25, 20))  # (left, upper, right, lower)
    assert out.shape == (2, 3, 30, 40)
    outside = torch.ones(30, 40, dtype=torch.bool)
    outside[10:20, 5:25] = False
    assert torch.equal(out[:, :, outside], photo[:, outside].expand(2, -1, -1))  # exactly the photograph
    torch.testing.assert_close(out[0, :, 10:20, 5:25], torch.full((3, 10, 20), 0.25))  # a flat edit stays flat
    torch.testing.assert_close(out[1, :, 10:20, 5:25], torch.full((3, 10, 20), -0.5))


def test_a_blend_fades_the_edit_in_over_its_width_and_leaves_no_seam() -> None:
    photo = torch.full((1, 30, 40), -1.0)
    crops = torch.ones(1, 1, 8, 8)
    box = (5, 10, 25, 20)
    hard, soft = paste_roi(photo, crops, box, 0)[0, 0], paste_roi(photo, crops, box, 4)[0, 0]
    jump = lambda image: max(image.diff(dim=0).abs().max(), image.diff(dim=1).abs().max())
    assert jump(hard) == 2.0 and jump(soft) <= 2.0 / 4 + 1e-6  # the step shared out over the blend width
    row = soft[15, 5:25]  # across the ROI: weight (d + 1/2) / 4 at distance d from its edge, then 1
    expected = torch.tensor([0.125, 0.375, 0.625, 0.875] + [1.0] * 12 + [0.875, 0.625, 0.375, 0.125]) * 2 - 1
    torch.testing.assert_close(row, expected)
    with pytest.raises(ValueError, match="blend 6"):
        paste_roi(photo, crops, box, 6)  # more than half the ROI's shorter side (10)


def test_an_unedited_crop_goes_back_as_it_was(tmp_path: Path) -> None:
    csv = fake_csv(tmp_path / "csv", n=4)
    data = CSVDataModule(csv=str(csv), roi=ROI, resolution=8, val_fraction=0.25)
    crop = data.file_dataset(csv.parent / "img3.png")[0]["image"]  # what training sees of it
    pasted = data.paste_back(csv.parent / "img3.png", crop[None], blend=2)[0]
    with Image.open(csv.parent / "img3.png") as img:
        original = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(pasted, original, atol=1e-6, rtol=0)  # a flat ROI: bicubic both ways is exact


def test_paste_back_needs_roi_data_a_file_and_a_blend_that_fits(tmp_path: Path) -> None:
    csv = fake_csv(tmp_path / "csv", n=4)
    with pytest.raises(ConfigError, match="(?s)`paste_back`.*data.roi"):
        check_paste_back(None, "photo.png", 0)
    with pytest.raises(ConfigError, match="(?s)`paste_back`.*data.roi"):
        check_paste_back(CSVDataModule(csv=str(csv), resolution=8), "photo.png", 0)  # data.roi=null
    data = CSVDataModule(csv=str(csv), roi=ROI, resolution=8)
    with pytest.raises(ConfigError, match="(?s)`paste_back`.*tensor"):
        check_paste_back(data, torch.zeros(3, 8, 8), 0)
    with pytest.raises(ConfigError, match="(?s)`paste_back_blend`.*0 to 5"):
        check_paste_back(data, "photo.png", 6)
    assert check_paste_back(data, "photo.png", 5) == {"paste_back": {"roi": ROI, "blend": 5}}
