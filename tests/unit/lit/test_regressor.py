"""The condition regressor as a model: train.py model=regressor, predict.py on folders and CSVs (with the data
module's own ROI preprocessing), the cond_mae metric on a regressor checkpoint, and sample.py sweeps read back.

One regressor (60 steps on 16x16 shapes) and one tiny vector-conditioned model are trained once for the module.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torchvision.utils import save_image

from conftest import TINY_NET, compose_config
from difflab.data import ShapesDataModule
from difflab.metrics.regression import VectorErrors

SHAPES = ["data=shapes", "data.resolution=16", "data.num_samples=300"]
QUIET = ["logger=csv", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from difflab.cli import train

    root = tmp_path_factory.mktemp("regressor")
    reg = train.run(compose_config("train", ["model=regressor", *SHAPES, "data.batch_size=32", "trainer.max_steps=60",
                                             "trainer.val_check_interval=60", *QUIET], root / "reg"))
    vec = train.run(compose_config("train", ["model=cond_vector", *SHAPES, "data.num_samples=64", "debug=fast",
                                             "metrics=none", *TINY_NET, "model.net.emb_channels=32", *QUIET],
                                   root / "vec"))
    return {"root": root, "reg": reg["last_ckpt"], "reg_dir": reg["run_dir"], "vec": vec["last_ckpt"]}


def shapes() -> ShapesDataModule:
    dm = ShapesDataModule(resolution=16, num_samples=300)
    dm.setup()
    return dm


def val_split(dm: ShapesDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """All validation images [N, 3, 16, 16] and their raw attributes [N, 8]."""
    (batch, _), = list(dm.iter_batches("val", 0, len(dm.split_dataset("val")), 1000))
    return batch["image"], dm.cond_stats.decode(batch["cond"])


def test_vector_errors_match_their_definitions() -> None:
    from difflab.data import CondStats

    stats = CondStats(["a", "b"], [1.0, 10.0], [2.0, 5.0])
    true = torch.tensor([[0.0, 10.0], [2.0, 20.0], [4.0, 0.0]])
    pred = true + torch.tensor([[1.0, -5.0], [-1.0, 5.0], [1.0, 0.0]])
    errors = VectorErrors(stats)
    errors.update(pred[:2], true[:2])  # two updates sum like one
    errors.update(pred[2:], true[2:])
    out = errors.compute()
    torch.testing.assert_close(out["mae"], torch.tensor([1.0, 10 / 3], dtype=torch.float64))
    torch.testing.assert_close(out["mae_std"], torch.tensor([0.5, 2 / 3], dtype=torch.float64))
    ss_res, ss_tot = (pred - true).pow(2).sum(0), (true - true.mean(0)).pow(2).sum(0)
    torch.testing.assert_close(out["r2"], (1 - ss_res / ss_tot).double())  # unit-free: raw = std units
    flat = errors.flat("val/")
    assert flat["val/mae/b"] == pytest.approx(10 / 3) and flat["val/r2"] == pytest.approx(float(out["r2"].mean()))


def test_regressor_logs_per_column_errors_and_beats_the_mean_baseline(runs: dict[str, Path]) -> None:
    from difflab.data.shapes import measure_shapes
    from difflab.lit import load_regressor

    with (runs["reg_dir"] / "csv" / "metrics.csv").open() as f:
        logged = [r for r in csv.DictReader(f) if r.get("val/r2")][-1]
    dm = shapes()
    for column in dm.columns:  # per column, raw and std units, and R2
        assert float(logged[f"val/mae/{column}"]) == pytest.approx(
            float(logged[f"val/mae_std/{column}"]) * dm.cond_stats.std[dm.columns.index(column)], rel=1e-4)
        assert f"val/r2/{column}" in logged
    model = load_regressor(runs["reg"])
    images, raw = val_split(dm)
    score = lambda predicted: (e := VectorErrors(dm.cond_stats), e.update(predicted, raw), e.flat())[2]  # noqa: E731
    ours = score(model.predict(images))
    baseline = score(torch.tensor(dm.cond_stats.mean).expand_as(raw))  # the trivial regressor: the training mean
    oracle = score(measure_shapes(images))  # the exact measurement from the pixels
    assert ours["r2"] == pytest.approx(float(logged["val/r2"]), abs=1e-4)  # what the run logged is the val split's
    assert baseline["r2"] <= 0.0 and 0.3 < ours["r2"] < oracle["r2"]  # the exact measurement is the ceiling
    assert ours["mae_std"] < 0.8 * baseline["mae_std"]
    assert model.last_val["r2"] == pytest.approx(ours["r2"], abs=1e-4)  # saved in the checkpoint


def test_predict_reads_a_folder_and_a_csv_like_the_training_images(runs: dict[str, Path], tmp_path: Path) -> None:
    from difflab.cli import predict
    from difflab.lit import load_regressor

    model, dm = load_regressor(runs["reg"]), shapes()
    images, raw = val_split(dm)
    folder = tmp_path / "pngs"
    (folder / "sub").mkdir(parents=True)
    names = [f"sub/v{i}.png" for i in range(5)]
    for name, image in zip(names, images):
        save_image((image + 1) / 2, folder / name)
    lines = ["filepath," + ",".join(dm.columns)] + [f"{n}," + ",".join(map(str, r.tolist())) for n, r in zip(names, raw)]
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    expected = model.predict(images[:5])
    for source, out in ((folder, tmp_path / "from_folder.csv"), (folder / "table.csv", tmp_path / "from_csv.csv")):
        result = predict.run(compose_config("predict", [f"ckpt={runs['reg']}", f"images={source}", f"out={out}"], tmp_path))
        with out.open() as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["file", *dm.columns] and [r["file"] for r in rows] == names
        got = torch.tensor([[float(r[c]) for c in dm.columns] for r in rows])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)  # the 8-bit PNGs of 8-bit images: exact
    assert result["errors"]["r2"] > 0.0  # the CSV holds the true values: the log compares


def test_predict_crops_to_the_roi_of_a_csv_regressor(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    from difflab.cli import predict, train
    from difflab.lit import load_regressor
    from fakes import fake_csv

    table = fake_csv(tmp_path / "csv", n=10)  # 40x30 images, grey only inside rows 10..19, columns 5..24
    data = [f"data.csv={table}", "data.columns=[x1,x2,x3,x4,x5,x6,x7,x8]", "data.roi=[10,5,10,20]", "data.resolution=8",
            "data.val_fraction=0.2"]
    out = train.run(compose_config("train", ["model=regressor", "data=csv", *data, "debug=fast", *QUIET], tmp_path))
    result = predict.run(compose_config("predict", [f"ckpt={out['last_ckpt']}", f"images={table}",
                                                    f"out={tmp_path / 'preds.csv'}"], tmp_path))
    model = load_regressor(out["last_ckpt"])
    dm = instantiate(model.run_config["data"])
    dm.setup()
    seen = {}  # file -> the image the training loop saw (ROI crop, resize)
    for split in ("train", "val"):
        dataset = dm.split_dataset(split)
        seen.update({name: dataset[i]["image"] for i, name in enumerate(dataset.files)})
    assert all(float(image.mean()) > -1 for name, image in seen.items() if name != "img0.png")  # grey, no border
    expected = model.predict(torch.stack([seen[name] for name in result["names"]]))
    torch.testing.assert_close(result["values"], expected, rtol=1e-4, atol=1e-5)
    generated = tmp_path / "generated"  # 8x8 files, as sample.py writes them: already cropped, taken as they are
    generated.mkdir()
    save_image((seen["img3.png"] + 1) / 2, generated / "000000.png")
    again = predict.run(compose_config("predict", [f"ckpt={out['last_ckpt']}", f"images={generated}",
                                                   f"out={tmp_path / 'generated.csv'}"], tmp_path))
    torch.testing.assert_close(again["values"][0], expected[result["names"].index("img3.png")], rtol=1e-4, atol=1e-5)


def test_cond_mae_uses_a_regressor_checkpoint(runs: dict[str, Path], tmp_path: Path) -> None:
    from difflab.lit import load_regressor
    from difflab.metrics.conditions import ConditionMAE
    from difflab.evaluation.suite import MetricsConfig, MetricSuite

    dm = shapes()
    config = MetricsConfig(fid=False, kid=False, inception_score=False, lpips_diversity=False, broken_rate=False,
                           regressor=str(runs["reg"]), cache_dir=str(tmp_path))
    suite = MetricSuite(config, checks={"cond_mae"})
    suite.prepare_reference(dm)
    assert suite.regressor_val_mae_std == pytest.approx(load_regressor(runs["reg"]).last_val["mae_std"])
    assert not list(tmp_path.iterdir())  # nothing trained or cached
    images, raw = val_split(dm)
    suite.update(images, torch.arange(len(images)), cond=dm.cond_stats.encode(raw))
    assert suite.compute()["cond_mae_std"] == pytest.approx(suite.regressor_val_mae_std, rel=0.05)  # 8-bit real images
    other = type(dm.cond_stats)(["x1", "x2"], [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="metrics.regressor"):
        ConditionMAE(load_regressor(runs["reg"]), other)


def test_sweep_holds_the_noise_per_row_and_reads_the_values_back(runs: dict[str, Path], tmp_path: Path) -> None:
    from difflab.api.images import load_image
    from difflab.cli import sample

    out = tmp_path / "sweep"
    args = [f"ckpt={runs['vec']}", "sweep={cx: [0.4, 0.6, 3]}", "sweep_seeds=2", "cond={r: 0.9}", "sampler=ddim",
            "sampler.steps=2", f"regressor={runs['reg']}", f"out_dir={out}"]
    result = sample.run(compose_config("sample", [*args, "guidance_scale=0"], tmp_path))  # w = 0: the condition is unused
    images = result["images"].reshape(2, 3, *result["images"].shape[1:])  # (noise, value, C, H, W)
    torch.testing.assert_close(images[:, 0], images[:, 2], rtol=0, atol=1e-6)  # one noise per row, whatever the value
    assert (images[0] - images[1]).abs().max() > 0.01
    with (out / "conditions.csv").open() as f:
        rows = list(csv.DictReader(f))
    dm = ShapesDataModule(resolution=16, num_samples=64)  # the vector model's data: its training mean
    dm.setup()
    assert [float(r["cx"]) for r in rows] == pytest.approx([0.4, 0.5, 0.6] * 2, abs=1e-6)
    assert all(float(r["r"]) == pytest.approx(0.9) for r in rows) and all(
        float(r["g"]) == pytest.approx(dm.cond_stats.mean[dm.columns.index("g")], abs=1e-6) for r in rows)
    from difflab.lit import load_regressor

    readings = load_regressor(runs["reg"]).predict(torch.stack([
        load_image(str(out / r["file"]), "x", None, 3, 16)[0] for r in rows]))  # the PNGs read back
    got = torch.tensor([[float(r[f"measured_{c}"]) for c in dm.columns] for r in rows])
    torch.testing.assert_close(got, readings, rtol=1e-4, atol=1e-5)
    record = json.loads((out / "samples.json").read_text())
    assert record["n"] == 6 and record["sweep"]["values"] == pytest.approx([0.4, 0.5, 0.6])
    assert record["measured"]["sweep"]["column"] == "cx" and (out / "sweep.png").is_file() and (out / "grid.png").is_file()
