"""The Python API (`import difflab`): load, sample, edit, evaluate, export, train, compose; and the commands as thin
callers of it (the same images as sample.py, the sampler resolved once per run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import difflab
from conftest import REPO, TINY_NET
from difflab.errors import ConfigError, MissingFileError
from difflab.samplers import SamplerSpec


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> difflab.TrainResult:
    """One tiny DDPM trained through `difflab.train` (one step)."""
    root = tmp_path_factory.mktemp("api")
    return difflab.train(["debug=fast", "logger=csv", "metrics=none", f"paths.root_dir={root}", *TINY_NET,
                          "+model.net.norm_groups=8"], run_dir=root / "run")  # norm groups diffusers can take (export)


def test_train_leaves_the_run_folder_of_train_py(run: difflab.TrainResult) -> None:
    assert run.global_step == 1 and run.last_ckpt == run.run_dir / "checkpoints" / "last.ckpt"
    assert (run.run_dir / "config.yaml").is_file() and run.last_ckpt.is_file()
    assert isinstance(run.load(), difflab.DiffusionModel)


def test_sample_gives_the_images_of_sample_py(run: difflab.TrainResult, tmp_path: Path) -> None:
    from difflab.cli.sample import run as sample_py

    model = difflab.load(run.last_ckpt)
    samples = model.sample(5, sampler="DPM++ 2M Karras", steps=3, seed=7, batch_size=2)
    assert samples.images.shape == (5, 1, 16, 16) and samples.nfe == 3 and len(samples.to_pil()) == 5
    assert samples.record["sampler"]["name"] == "dpmpp_2m" and samples.record["sampler"]["grid"] == "karras"
    assert samples.grid().size == (3 * 18 + 2, 2 * 18 + 2)  # 3 x 2 images of 16 px with 2-px borders
    samples.save(tmp_path / "api")
    cfg = difflab.compose([f"ckpt={run.last_ckpt}", "sampler=DPM++ 2M Karras", "sampler.steps=3", "seed=7", "n=5",
                           "batch_size=2", f"out_dir={tmp_path / 'cli'}"], config="sample", run_dir=tmp_path / "cli")
    sample_py(cfg)
    for name in [f"images/{i:06d}.png" for i in range(5)] + ["grid.png"]:
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert json.loads((tmp_path / "api" / "samples.json").read_text()) == json.loads(
        (tmp_path / "cli" / "samples.json").read_text())


def test_sample_py_resolves_its_sampler_once(run: difflab.TrainResult, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from difflab.cli.sample import run as sample_py

    made = []
    init = SamplerSpec.__init__

    def counting(self, *args, **kwargs):
        made.append(args[0] if args else kwargs.get("name"))
        init(self, *args, **kwargs)

    cfg = difflab.compose([f"ckpt={run.last_ckpt}", "sampler=ddim", "sampler.steps=2", "n=2", f"out_dir={tmp_path}"],
                          config="sample", run_dir=tmp_path)
    monkeypatch.setattr(SamplerSpec, "__init__", counting)
    sample_py(cfg)
    assert made == ["ddim"]  # neither the checkpoint's stored sampler nor a second copy of this one is built


def test_edit_img2img_and_interpolate(run: difflab.TrainResult) -> None:
    model = difflab.load(run.last_ckpt)
    start = torch.zeros(1, 16, 16)
    kept = model.edit(start, mode="img2img", strength=0.0, n=2, sampler="ddim", steps=4)
    torch.testing.assert_close(kept.images, start.expand(2, 1, 16, 16))  # strength 0: the input unchanged
    assert model.edit(start, strength=0.5, n=2, sampler="ddim", steps=4).record["strength"] == 0.5
    ends = model.sample(2, sampler="ddim", steps=3, seed=0).images
    frames = model.edit(mode="interpolate", between=(0, 1), n=3, sampler="ddim", steps=3, seed=0).images
    torch.testing.assert_close(frames[[0, -1]], ends, atol=1e-5, rtol=0)  # the two images' own noises at the ends


def test_evaluate_returns_the_metrics_json_record(run: difflab.TrainResult, tmp_path: Path) -> None:
    model = difflab.load(run.last_ckpt)
    metrics = {"n_samples": 4, "batch_size": 4, "fid": False, "kid": False, "inception_score": False,
               "lpips_diversity": False, "clip_score": False, "condition_accuracy": False, "cond_mae": False}
    record = model.evaluate(metrics, sampler="ddim", steps=2, out_dir=tmp_path / "eval")
    assert record["values"]["nfe"] == 2 and 0 <= record["values"]["broken_rate"] <= 1
    assert record["sampler"]["name"] == "ddim" and model.sampler.name == "ddpm"  # the evaluation's, then its own
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["values"] == record["values"]
    assert len(list((tmp_path / "eval" / "images").glob("*.png"))) == 4


def test_export_loads_back_as_the_same_model(run: difflab.TrainResult, tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    model = difflab.load(run.last_ckpt)
    model.export(tmp_path / "pipe", card_n=0)
    back = difflab.load(tmp_path / "pipe")
    assert isinstance(back, difflab.DiffusionModel) and back.source == str(tmp_path / "pipe")
    a = model.sample(2, sampler="ddim", steps=3, seed=1).images
    b = back.sample(2, sampler="ddim", steps=3, seed=1).images
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_mistakes_name_the_argument(run: difflab.TrainResult, tmp_path: Path) -> None:
    model = difflab.load(run.last_ckpt)
    with pytest.raises(ConfigError, match="`n`"):
        model.sample(0)
    with pytest.raises(ConfigError, match="dpm_9000"):
        model.sample(2, sampler="dpm_9000")
    with pytest.raises(ConfigError, match="`guidance_rescale`"):
        model.sample(2, guidance_rescale=2.0)
    with pytest.raises(ConfigError, match="`sampler`"):
        model.sample(2, steps=10)  # steps without a sampler: which one?
    with pytest.raises(MissingFileError, match="nope.ckpt"):
        difflab.load(tmp_path / "nope.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="empty.*no model_index.json"):
        difflab.load(tmp_path / "empty")


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_import_difflab_stays_light() -> None:
    code = "import sys, difflab; print('torch' in sys.modules, callable(difflab.load), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.split() == ["False", "True", "True"], out.stderr[-2000:]
