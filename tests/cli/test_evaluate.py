"""evaluate.py: a checkpoint under any sampler, or a folder of images, scored with the same protocol."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config
from difflab.cli import evaluate, sample, train
from difflab.data import DataNotFoundError
from difflab.metrics import MetricWeightsError
from fakes import tiny_networks

SMALL = ["logger=csv", "metrics=fast", "metrics.batch_size=4", "metrics.reference.n=16",
         "metrics.kid_subset_size=4", "metrics.feature_batch_size=5"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import TINY_NET

    root = tmp_path_factory.mktemp("train")
    out = train.run(compose_config("train", ["debug=fast", "logger=csv", "metrics=none", *TINY_NET], root))
    return out["last_ckpt"]


def test_checkpoint_then_its_images_folder_give_the_same_numbers(ckpt: Path, tmp_path: Path) -> None:
    cfg = compose_config("evaluate", [f"ckpt={ckpt}", "sampler=ddim", "sampler.steps=3", "n_samples=6", "seed=5",
                                      *SMALL], tmp_path / "a")
    record = evaluate.run(cfg, networks=tiny_networks())
    out = tmp_path / "a" / "run"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(record))
    values = record["values"]
    assert {"fid", "kid", "is", "lpips_diversity", "samples_per_sec"} <= set(values) and values["nfe"] == 3
    assert record["sampler"]["name"] == "ddim" and record["n_samples"] == 6 and record["seed"] == 5
    assert record["protocol"]["reference"]["count"] == 16 and record["protocol"]["weights_hash"]["inception"] == "tiny0000"
    assert record["kind"] == "evaluate" and record["params"] > 0 and record["global_step"] == 1
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.png" for i in range(6)]
    logged = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    assert float(logged[0]["eval/fid"]) == pytest.approx(values["fid"])

    # the same seed through sample.py gives the same images, whatever the batch size (the same pixels; each PNG's
    # `parameters` chunk says which command made it)
    sampled = sample.run(compose_config("sample", [f"ckpt={ckpt}", "sampler=ddim", "sampler.steps=3", "n=6", "seed=5",
                                                   "batch_size=6"], tmp_path / "s"))
    for i in range(6):
        with Image.open(sampled["out_dir"] / "images" / f"{i:06d}.png") as a, Image.open(out / "images" / f"{i:06d}.png") as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)) and "Request" in a.info["parameters"]

    # scoring the written PNGs as a folder reproduces every quality number (8-bit images round-trip exactly)
    folder = evaluate.run(compose_config("evaluate", [f"images={out / 'images'}", "data=digits", *SMALL], tmp_path / "b"),
                          networks=tiny_networks())
    assert folder["n_samples"] == 6 and folder["variant"] == "images"
    for key in ("fid", "kid", "is", "lpips_diversity"):
        assert folder["values"][key] == pytest.approx(values[key], rel=1e-6), key


def test_bad_requests_fail_clearly(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of ckpt"):
        evaluate.run(compose_config("evaluate", [f"ckpt={ckpt}", f"images={tmp_path}", *SMALL], tmp_path))
    with pytest.raises(DataNotFoundError, match="images"):
        evaluate.run(compose_config("evaluate", [f"images={tmp_path / 'none'}", "data=digits", *SMALL], tmp_path),
                     networks=tiny_networks())
    with pytest.raises(MetricWeightsError, match="metrics.weights.inception"):  # evaluation never skips silently
        evaluate.run(compose_config("evaluate", [f"ckpt={ckpt}", f"metrics.weights.inception={tmp_path / 'x.pth'}",
                                                 *SMALL], tmp_path))


def test_dequantisation_stays_inside_each_pixels_bin() -> None:
    import torch

    from difflab.evaluation.likelihood import dequantize
    from difflab.samplers.base import StackedGenerator

    values = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16)
    x = dequantize(values / 127.5 - 1, StackedGenerator([0]))
    assert x.dtype == torch.float64 and x.shape == values.shape
    assert bool(((x + 1) * 128 >= values.double()).all()) and bool(((x + 1) * 128 < values.double() + 1).all())
    assert x.std() > 0 and not torch.equal(x, dequantize(values / 127.5 - 1, StackedGenerator([1])))


def test_nll_preset_reports_bits_per_dim_independent_of_the_batching(ckpt: Path, tmp_path: Path) -> None:
    def bpd(batch: int) -> dict:
        cfg = compose_config("evaluate", [f"ckpt={ckpt}", "metrics=nll", "metrics.nll.n=6", f"metrics.nll.batch_size={batch}",
                                          "metrics.nll.rtol=1e-4", "metrics.nll.atol=1e-4", "logger=csv"], tmp_path / str(batch))
        return evaluate.run(cfg)["values"]

    a, b = bpd(6), bpd(4)
    assert 0 < a["bpd"] < 30 and a["nll_images"] == 6 and a["nll_nfe"] > 10
    assert b["bpd"] == pytest.approx(a["bpd"], rel=2e-3)  # same images, dequantisation noise and probes
    assert "fid" not in a and "samples_per_sec" not in a
    with pytest.raises(Exception, match=r"unknown key\(s\) \['steps'\] under `metrics.nll`"):
        evaluate.run(compose_config("evaluate", [f"ckpt={ckpt}", "metrics=nll", "+metrics.nll.steps=3"], tmp_path / "x"))


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_evaluate_sweep_ends_with_the_quality_vs_steps_table(ckpt: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "WANDB_MODE": "offline", "DIFFLAB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "evaluate.py"), "-m", f"ckpt={ckpt}", "sampler=ddim,euler", "sampler.steps=2,4",
           "metrics=none", "metrics.broken_rate=true", "n_samples=4", "logger=csv", f"paths.root_dir={tmp_path}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "evaluate" / "multirun").iterdir()
    rows = list(csv.DictReader((sweep / "comparison.csv").open()))
    assert sorted((r["sampler"], r["nfe"]) for r in rows) == [("ddim", "2"), ("ddim", "4"), ("euler", "2"), ("euler", "4")]
    assert all(float(r["samples_per_sec"]) > 0 for r in rows)
    assert (sweep / "comparison.md").is_file() and (sweep / "fid_vs_nfe.png").is_file()
    assert (sweep / "gallery.png").is_file()  # a row of samples per evaluated sampler
