"""model=diffusers: a diffusers UNet2DModel pipeline folder as a difflab model. Round trip: a difflab model exported
and imported back samples the same images under two samplers; evaluate.py scores it and train.py fine-tunes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from difflab.errors import UserError
from test_export import export, make_checkpoint

diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) loads the pipeline folders")


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(root, checkpoint, exported pipeline folder) of a tiny unconditional pixel model with random weights."""
    root = tmp_path_factory.mktemp("import")
    ckpt = make_checkpoint(root)
    return root, ckpt, export(root, ckpt, "card.n=0")


def sample(root: Path, out: str, *overrides: str) -> torch.Tensor:
    """sample.py's images for these overrides (4 images, seed 5)."""
    from difflab.cli.sample import run

    return run(compose_config("sample", ["n=4", "seed=5", "save_images=false", f"out_dir={root}/{out}", *overrides], root))["images"]


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_an_exported_model_imported_back_samples_the_same_images(round_trip, sampler):
    root, ckpt, folder = round_trip
    knobs = [f"sampler={sampler}", "sampler.steps=6"]
    original = sample(root, f"orig_{sampler}", f"ckpt={ckpt}", *knobs)
    imported = sample(root, f"imported_{sampler}", "model=diffusers", f"pipeline.path={folder}", *knobs)
    assert original.shape == imported.shape == (4, 1, 16, 16)
    assert (original - imported).abs().max() < 1e-4
    record = json.loads((root / f"imported_{sampler}" / "samples.json").read_text())
    assert record["pipeline"] == str(folder) and record["sampler"]["name"] == sampler


def test_evaluate_scores_an_imported_pipeline(round_trip):
    from difflab.cli.evaluate import run

    root, _, folder = round_trip
    cfg = compose_config("evaluate", ["model=diffusers", f"pipeline.path={folder}", "data=digits", "metrics=none", "metrics.broken_rate=true",
                                      "n_samples=2", "sampler.steps=2", "logger=csv", f"out_dir={root}/eval"], root)
    record = run(cfg)
    assert record["n_samples"] == 2 and (root / "eval" / "metrics.json").is_file()


def test_train_fine_tunes_an_imported_pipeline(round_trip):
    from difflab.api.training import run
    from difflab.lit.checkpoint import load_module

    root, _, folder = round_trip
    cfg = compose_config("train", ["model=diffusers", f"pipeline.path={folder}", "debug=fast", "logger=csv",
                                   "metrics=none", "model.optimizer.lr=1e-2", "model.lr_scheduler.warmup_steps=0",
                                   f"paths.run_dir={root}/tune"], root)
    out = run(cfg)
    assert out["global_step"] == 1
    tuned = load_module(out["last_ckpt"], use_ema=False)
    before = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, tuned.net.unet.state_dict()[k])]
    assert changed  # the step moved the weights, and the fine-tuned checkpoint loads back


def test_a_folder_that_is_not_a_diffusers_pipeline_names_the_file_and_key(tmp_path):
    from difflab.lit.pipelines import load_diffusers_pipeline
    from difflab.lit.stable_diffusion import sd_folder

    (tmp_path / "unet").mkdir()
    (tmp_path / "scheduler").mkdir()
    with pytest.raises(UserError, match="`pipeline.path`.*lacks model_index.json, unet/config.json, "
                                        "scheduler/scheduler_config.json.*save_pretrained"):
        load_diffusers_pipeline(str(tmp_path))
    with pytest.raises(UserError, match="model=diffusers"):  # a DDPM folder given to model=sd
        sd_folder(str(tmp_path))
