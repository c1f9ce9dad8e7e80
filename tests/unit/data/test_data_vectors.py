"""Vector-conditioned data: the CSV module (ROI, resize, z-scoring round trip, bad inputs) and the shapes set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config
from fakes import fake_csv
from hydra.utils import instantiate

from difflab.data import (
    CondStats,
    CorruptDataError,
    CorruptImageError,
    CSVDataModule,
    DataNotFoundError,
    ShapesDataModule,
)
from difflab.data.shapes import (
    ATTRIBUTES,
    RANGES,
    draw_shapes,
    measure_shapes,
    random_shapes,
)
from difflab.data.vectors import condition_rows
from difflab.errors import CorruptFileError

ROI = [10, 5, 10, 20]  # top, left, height, width: exactly the filled block of fake_csv's images


def test_csv_roi_resize_and_normalisation_round_trip(tmp_path: Path) -> None:
    table = fake_csv(tmp_path / "d", n=10)
    dm = CSVDataModule(str(table), columns=[f"x{j}" for j in range(1, 9)], roi=ROI, resolution=8, val_fraction=0.2,
                       batch_size=4)
    dm.setup("fit")
    assert (dm.name, dm.channels, dm.num_classes, dm.cond_dim) == ("table", 3, None, 8)
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"image", "cond"} and batch["image"].shape == (2, 3, 8, 8)
    # the ROI is the uniform block, so every resized pixel is its grey level 10 * i; x1 = i + 0.1 names i
    raw = dm.cond_stats.decode(batch["cond"])
    i = (raw[:, 0] - 0.1).round()
    expected = (10 * i / 255 * 2 - 1)[:, None, None, None].expand_as(batch["image"])
    torch.testing.assert_close(batch["image"], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(raw[:, 1:] - raw[:, :1], torch.arange(1, 8).float().expand(2, -1) / 10, atol=1e-5, rtol=0)
    train_raw = dm.cond_stats.decode(condition_rows(dm, "train"))
    z = dm.cond_stats.zscore(train_raw)
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-5, rtol=0)  # statistics of the training split
    torch.testing.assert_close(z.std(0), torch.ones(8), atol=1e-5, rtol=0)
    stats = CondStats.from_dict(dm.cond_stats.to_dict())
    torch.testing.assert_close(stats.encode(stats.decode(batch["cond"])), batch["cond"])
    off = CSVDataModule(str(table), roi=ROI, resolution=8, normalize=False, val_fraction=0.2, batch_size=4)
    off.setup()
    torch.testing.assert_close(condition_rows(off, "val"), raw)  # data.normalize=false: raw values go to the net
    whole = CSVDataModule(str(table), roi=None, resolution=8, val_fraction=0.2)
    whole.setup()
    assert whole.split_dataset("val")[0]["image"].min() == -1.0  # no ROI: the black frame is in the picture


def _write(table: Path, text: str) -> Path:
    table.write_text(text)
    return table


def test_csv_bad_inputs_name_the_row_or_file(tmp_path: Path) -> None:
    table = fake_csv(tmp_path / "d", n=6, columns=2)
    head = "filepath,x1,x2\n"
    ok = [f"img{i}.png,{i},{2 * i}" for i in range(6)]
    make = lambda rows, **kw: CSVDataModule(str(_write(tmp_path / "d" / "t.csv", head + "\n".join(rows) + "\n")),
                                            resolution=8, val_fraction=0.34, **kw)
    with pytest.raises(DataNotFoundError, match="data.csv"):
        CSVDataModule(str(tmp_path / "nope.csv")).setup()
    with pytest.raises(ValueError, match=r"\['x9'\] not in the header"):
        CSVDataModule(str(table), columns=["x1", "x9"]).setup()
    with pytest.raises(CorruptDataError, match="row 4: column 'x2' holds 'abc'"):
        make(ok[:2] + ["img2.png,2,abc"] + ok[3:]).setup()
    with pytest.raises(CorruptDataError, match="row 3: column 'x1' holds 'nan'"):
        make(ok[:1] + ["img1.png,nan,2"] + ok[2:]).setup()
    with pytest.raises(DataNotFoundError, match=r"row 5: .*missing\.png"):
        make(ok[:3] + ["missing.png,3,6"] + ok[4:]).setup()
    (tmp_path / "d" / "broken.png").write_bytes(b"not a png")
    dm = make(ok[:5] + ["broken.png,5,10"])
    dm.setup()  # only the first image is decoded at setup ...
    with pytest.raises(CorruptImageError, match=r"broken\.png \(CSV row 7\)"):
        [dm.train_set[i] for i in range(len(dm.train_set))] + [dm.val_set[i] for i in range(len(dm.val_set))]
    with pytest.raises(CorruptImageError, match=r"(?s)1 of 6 .*broken\.png \(CSV row 7\)"):
        make(ok[:5] + ["broken.png,5,10"], verify=True).setup()  # ... all of them with data.verify=true
    with pytest.raises(CorruptImageError, match=r"(?s)img0\.png \(CSV row 2\).*ROI \(top 0, left 0, height 31, width 40.*40x30"):
        make(ok, roi=[0, 0, 31, 40]).setup()
    with pytest.raises(ValueError, match=r"zero-variance column\(s\) .*x2 \(every value 7\)"):
        make([f"img{i}.png,{i},7" for i in range(6)]).setup()
    flat = make([f"img{i}.png,{i},7" for i in range(6)], normalize=False)
    flat.setup()  # without z-scoring a constant column is only reported
    assert flat.cond_stats.std[1] == 1.0


def test_csv_columns_null_are_the_numeric_columns_of_the_header_said_in_the_log(tmp_path: Path, caplog) -> None:
    table = fake_csv(tmp_path / "d", n=6, columns=2)
    lines = table.read_text().splitlines()
    table.write_text("\n".join([lines[0] + ",note"] + [f"{line},n{i}" for i, line in enumerate(lines[1:])]) + "\n")
    dm = CSVDataModule(str(table), resolution=8, val_fraction=0.34)
    with caplog.at_level("INFO", logger="difflab.data.csv_table"):
        dm.setup()
    assert dm.columns == ["x1", "x2"] and dm.cond_dim == 2 and dm.cond_stats.columns == ["x1", "x2"]
    assert "data.columns=null, so the value columns are the numeric columns of its header: ['x1', 'x2'] (left out, " \
           "not numbers in the first row: ['note'])" in caplog.text
    with pytest.raises(ValueError, match=r"`data.cond_dim`: 5, but .* has 2 value columns"):
        CSVDataModule(str(table), resolution=8, val_fraction=0.34, cond_dim=5).setup()


@pytest.mark.parametrize("row,words", [
    ("img2.png,2,4,9", r"row 4 holds 4 values for the 3 columns"),
    ("img2.png,1e39,4", r"row 4: column 'x1' holds 1e39, beyond the largest float32 value \(3\.403e\+38\)"),
])
def test_csv_rows_of_the_wrong_length_or_beyond_float32_are_errors(tmp_path: Path, row: str, words: str) -> None:
    table = fake_csv(tmp_path / "d", n=6, columns=2)
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:3] + [row] + lines[4:]) + "\n")
    with pytest.raises(CorruptFileError, match=words):
        CSVDataModule(str(table), resolution=8, val_fraction=0.34).setup()
    table.write_text("filepath,x1,x1\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(CorruptFileError, match=r"names the column\(s\) \['x1'\] more than once \(config key `data.csv`\)"):
        CSVDataModule(str(table), resolution=8, val_fraction=0.34).setup()


def test_shapes_are_seeded_and_measured_exactly_up_to_the_pixel_grid() -> None:
    labels, attrs = random_shapes(300, seed=3)
    again = random_shapes(300, seed=3)
    assert torch.equal(labels, again[0]) and torch.equal(attrs, again[1])
    lo, hi = torch.tensor([RANGES[a][0] for a in ATTRIBUTES]), torch.tensor([RANGES[a][1] for a in ATTRIBUTES])
    assert ((attrs >= lo) & (attrs <= hi)).all() and torch.bincount(labels).min() > 70
    images = draw_shapes(labels, attrs, 32) * 2 - 1
    error = (measure_shapes(images) - attrs).abs()
    assert error[:, 4:].max() < 1e-5  # colours and background: exact
    assert error[:, :2].max() < 0.5 / 32 and error[:, 2].mean() < 0.1 * attrs[:, 2].mean()  # centre, size
    assert error[:, 3].mean() < 0.05  # aspect
    shuffled = (measure_shapes(images) - attrs[torch.randperm(300)]).abs()
    assert (shuffled.mean(0) > 5 * error.mean(0)).all()  # the oracle tells the requested vector apart


def test_shapes_module_batches_labels_and_z_scored_attributes() -> None:
    dm = ShapesDataModule(resolution=16, num_samples=300, batch_size=8)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label", "cond"} and batch["cond"].shape == (8, 8)
    assert batch["image"].shape == (8, 3, 16, 16) and batch["label"].dtype == torch.int64
    z = condition_rows(dm, "train")
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-4, rtol=0)
    (val, _), = list(dm.iter_batches("val", 0, 30, 30))
    measured = measure_shapes(val["image"])
    torch.testing.assert_close(measured[:, 4:], dm.cond_stats.decode(val["cond"])[:, 4:], atol=3e-3, rtol=0)  # 8-bit


@pytest.mark.parametrize("name", ["shapes", "csv"])
def test_vector_data_configs_instantiate(tmp_path: Path, name: str) -> None:
    extra = [f"data.csv={fake_csv(tmp_path, n=8)}", "data.columns=[x1,x3]"] if name == "csv" else ["data.num_samples=100"]
    cfg = compose_config("train", [f"data={name}", "data.resolution=8", "data.batch_size=2", *extra], tmp_path)
    assert cfg.data.cond_dim == (2 if name == "csv" else 8)
    dm = instantiate(cfg.data)
    dm.setup()
    assert next(iter(dm.train_dataloader()))["cond"].shape == (2, cfg.data.cond_dim)
