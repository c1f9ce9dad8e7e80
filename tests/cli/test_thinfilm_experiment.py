"""`python train.py -m experiment=thinfilm_normalization`: the vector model with and without z-scored conditions on
the same CSV data, one comparison row each (the documented commands at tiny size: one training step, 4 samples, no
metric weights, so FID is unavailable and the regressor is off; benchmarks/results/thinfilm_normalization.md measures
both), and the interference data set `docs/examples/film_csv.py --kind interference` it is documented with."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from fakes import fake_csv

import difflab

REPO = Path(__file__).resolve().parents[2]
ROI = "data.roi=[10,5,10,20]"
COLUMNS = "data.columns=[x1,x2,x3,x4,x5,x6,x7,x8]"
FILM_CSV = REPO / "docs" / "examples" / "film_csv.py"


def film_csv_module() -> ModuleType:
    """docs/examples/film_csv.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("film_csv", FILM_CSV)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_interference_colour_is_airys_reflectance() -> None:
    film = film_csv_module()
    n = np.array([1.3, 1.7, 2.0])
    bare = ((1 - 1.52) / (1 + 1.52)) ** 2  # no film (d = 0): the bare glass, whatever the index
    np.testing.assert_allclose(film.reflectance(n, np.zeros(3)), np.full((3, 3), bare), rtol=1e-12)
    quarter = film.WAVELENGTHS[1] / (4 * n)  # n d = lambda / 4 at 540 nm: R = ((n_glass - n^2) / (n_glass + n^2))^2
    np.testing.assert_allclose(film.reflectance(n, quarter)[:, 1], ((1.52 - n**2) / (1.52 + n**2)) ** 2, rtol=1e-12)
    half = film.WAVELENGTHS[2] / (2 * n)  # a half-wave layer is absent at its wavelength
    np.testing.assert_allclose(film.reflectance(n, half)[:, 2], np.full(3, bare), rtol=1e-12)


def test_the_two_variants_differ_in_the_normalisation_alone(tmp_path: Path) -> None:
    csv_file = fake_csv(tmp_path / "csv")
    made = {}
    for variant in ("cond_vector_zscore", "cond_vector_raw"):
        made[variant] = difflab.compose(["experiment=thinfilm_normalization", f"variant={variant}",
                                         f"data.csv={csv_file}", COLUMNS, ROI], run_dir=tmp_path / variant)
    zscore, raw = made["cond_vector_zscore"], made["cond_vector_raw"]
    assert zscore.data.normalize is True and raw.data.normalize is False
    assert zscore.model.condition._target_.endswith("Vector") and zscore.model == raw.model
    assert (zscore.metrics.fid, zscore.metrics.cond_mae, zscore.sampler.name) == (True, True, "ddim")
    assert zscore.trainer == raw.trainer and zscore.seed == raw.seed


@pytest.mark.slow
def test_the_sweep_ends_with_one_row_per_variant(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO / "src"), "TORCH_HOME": str(tmp_path / "t")}
    env.pop("DIFFLAB_ALLOW_DOWNLOAD", None)
    made = subprocess.run([sys.executable, str(FILM_CSV), "data/film_units", "--n", "16", "--kind", "interference"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode == 0 and "thickness_nm, index, wedge_nm, exposure" in made.stdout, made.stderr
    tiny = ["debug=fast", "data.val_fraction=0.25", "model.net.base_channels=8", "model.net.channel_mult=[1,2]",
            "model.net.num_heads=1", "model.net.emb_channels=32", "metrics.n_samples=4", "metrics.batch_size=4",
            "metrics.cond_mae=false", "sampler.steps=2"]
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "experiment=thinfilm_normalization",
                           "data.csv=data/film_units/film.csv", "data.roi=[16,8,40,80]", "data.resolution=16",
                           *tiny, f"paths.root_dir={tmp_path}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "numeric columns of its header" in done.stdout + done.stderr  # data.columns inferred, and said so
    (sweep,) = (tmp_path / "runs" / "train" / "multirun").iterdir()
    with (sweep / "comparison.csv").open(newline="") as f:
        rows = {row["variant"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"cond_vector_zscore", "cond_vector_raw"}
    for variant, normalize in (("cond_vector_zscore", True), ("cond_vector_raw", False)):
        stats = json.loads((Path(rows[variant]["run_dir"]) / "cond_stats.json").read_text())
        assert stats["normalize"] is normalize and stats["columns"] == ["thickness_nm", "index", "wedge_nm", "exposure"]
