"""Latent diffusion end to end on tiny folder data: stage 1, stage 2 on its latents, both in one command,
a pretrained diffusers AutoencoderKL, and the clear errors of a missing first stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import CONF
from difflab.api.config import group_aliases
from difflab.api.training import run
from difflab.lit.checkpoint import load_module
from difflab.nets.autoencoder import AutoencoderNotFoundError, DiffusersLatent, pretrained_autoencoder
from fakes import fake_images, tiny_vae_folder

TINY_VAE = ["model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
            "model.net.attention_resolutions=[]", "model.discriminator.base_channels=8", "model.discriminator.num_layers=1"]
TINY_STAGE1 = [o.replace("model.", "model.autoencoder.stage1.", 1) for o in TINY_VAE]
LDM = ["model=ldm", "model.autoencoder.downsample_factor=2", "model.scale_factor_images=8"]


def folder_data(root: Path) -> list[str]:
    images = root / "images" if (root / "images").is_dir() else fake_images(root / "images", per_class=8)
    return ["data=image_folder", f"data.root={images}", "data.resolution=16", "data.batch_size=4", "data.val_fraction=0.25",
            "metrics.n_samples=4", "metrics.batch_size=4"]


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory) -> Path:
    """A first stage trained for 3 steps by `python train.py model=vae` on tiny folder data."""
    from conftest import compose_config

    root = tmp_path_factory.mktemp("vae")
    cfg = compose_config("train", ["debug=fast", "logger=csv", "model=vae", *TINY_VAE, *folder_data(root),
                                   "trainer.max_steps=3", "model.disc_start=1"], root)
    out = run(cfg)
    assert (out["run_dir"] / "metrics" / "reconstructions_final.png").is_file()
    assert "val/psnr" in out["metrics"] and "train/d_loss" in out["metrics"]  # the discriminator switched on
    return out["last_ckpt"]


def test_ldm_trains_on_the_latents_and_samples_decoded_images(vae_ckpt, train_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(vae_ckpt.parents[2])  # the first stage named relative to where the command runs
    cfg = train_cfg(*LDM, f"model.autoencoder.ckpt={vae_ckpt.relative_to(vae_ckpt.parents[2])}", *folder_data(tmp_path),
                    "trainer.max_steps=2", "sampler=ddim", "sampler.steps=3")
    assert cfg.model.net.in_channels == 4 and cfg.model.net.resolution == 8  # 16 px images, f = 2
    out = run(cfg)
    assert out["global_step"] == 2 and "perf/samples_per_sec" in out["metrics"]
    assert not (out["run_dir"] / "stage1").exists()
    ckpt = torch.load(out["last_ckpt"], map_location="cpu", weights_only=False)
    scale = float(ckpt["state_dict"]["autoencoder.scale_factor"])
    assert scale > 0 and scale != 1.0  # 1/std(z) from the data, saved with the weights
    assert "latent/scale_factor" in (out["run_dir"] / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert ckpt["config"]["model"]["autoencoder"]["ckpt"] == str(vae_ckpt.resolve())  # sampled from anywhere:
    monkeypatch.chdir(tmp_path)
    module = load_module(out["last_ckpt"])
    assert float(module.autoencoder.scale_factor) == scale
    assert module.latent_shape == (4, 8, 8) and module.image_shape == (3, 16, 16)
    images, nfe = module.generate(3, seed=0, batch_size=2)
    assert images.shape == (3, 3, 16, 16) and nfe == 3
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0
    again, _ = module.generate(1, seed=0, first_index=2)
    torch.testing.assert_close(again, images[2:])  # per-image seeds survive decoding


def test_stage1_then_stage2_in_one_command(train_cfg, tmp_path):
    cfg = train_cfg(*LDM, *TINY_STAGE1, *folder_data(tmp_path), "model.autoencoder.stage1_steps=2", "metrics=none")
    out = run(cfg)
    stage1 = out["run_dir"] / "stage1" / "checkpoints" / "last.ckpt"
    assert stage1.is_file() and out["global_step"] == 1
    saved = torch.load(out["last_ckpt"], map_location="cpu", weights_only=False)
    assert saved["config"]["model"]["autoencoder"]["ckpt"] == str(stage1)
    assert torch.load(stage1, map_location="cpu", weights_only=False)["global_step"] == 2
    stamp = stage1.stat().st_mtime_ns  # resuming stage 2 reuses the run's first stage
    resumed = run(train_cfg(*LDM, *TINY_STAGE1, *folder_data(tmp_path), "metrics=none", "trainer.max_steps=2",
                            f"ckpt_path={out['last_ckpt']}"))
    assert resumed["global_step"] == 2 and stage1.stat().st_mtime_ns == stamp


def test_pretrained_diffusers_autoencoder_loads_and_trains(train_cfg, tmp_path):
    folder = tiny_vae_folder(tmp_path / "vae", scaling_factor=0.5)
    argv = group_aliases(["train.py", "model=ldm", "model.autoencoder=pretrained", f"model.autoencoder.path={folder}"], CONF)
    assert argv[2] == "model/autoencoder=pretrained"  # the spelling reaches Hydra as the group override
    cfg = train_cfg(*argv[1:], "model.autoencoder.downsample_factor=2", *folder_data(tmp_path), "metrics=none")
    out = run(cfg)
    module = load_module(out["last_ckpt"])
    assert isinstance(module.autoencoder, DiffusersLatent) and float(module.autoencoder.scale_factor) == 0.5
    # the oracle: diffusers itself, scaled by its config's scaling_factor
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    vae = module.autoencoder.vae
    with torch.no_grad():
        expected = vae.encode(x).latent_dist.mode() * 0.5
        torch.testing.assert_close(module.autoencoder.encode(x, sample=False), expected)
        torch.testing.assert_close(module.autoencoder.decode(expected), vae.decode(expected / 0.5).sample.clamp(-1, 1))
    assert module.generate(2, seed=0)[0].shape == (2, 3, 16, 16)


def test_missing_first_stage_errors_name_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AutoencoderNotFoundError, match="model.autoencoder.path"):
        pretrained_autoencoder(str(tmp_path / "nowhere"))
    with pytest.raises(AutoencoderNotFoundError, match="huggingface-cli download"):
        pretrained_autoencoder("difflab-test/no-such-vae")
    from difflab.nets.autoencoder import load_kl_autoencoder

    with pytest.raises(AutoencoderNotFoundError, match="model.autoencoder.ckpt.*model=vae"):
        load_kl_autoencoder(str(tmp_path / "missing.ckpt"))
    folder = tiny_vae_folder(tmp_path / "vae", scaling_factor=0.5)
    with pytest.raises(ValueError, match="model.autoencoder.latent_channels=4"):
        pretrained_autoencoder(str(folder), latent_channels=3)


def test_latent_cache_is_written_once_and_keyed_by_the_autoencoder(vae_ckpt, train_cfg, tmp_path):
    from difflab.lit.latent import weights_hash

    overrides = [*LDM, f"model.autoencoder.ckpt={vae_ckpt}", *folder_data(tmp_path), "data.cache_latents=true", "metrics=none"]
    out = run(train_cfg(*overrides))
    files = list((tmp_path / "data" / "latent_cache").glob("latents-images-train-16px-*.pt"))
    assert len(files) == 1 and "-hflip-" in files[0].name
    module = load_module(out["last_ckpt"])
    assert files[0].name.endswith(f"-{weights_hash(module.autoencoder)}.pt")
    blob = torch.load(files[0], weights_only=True)
    from hydra.utils import instantiate

    datamodule = instantiate(train_cfg(*overrides).data)
    image = datamodule.split_dataset("train")[0]["image"][None]
    mean, std = module.autoencoder.posterior(image)
    torch.testing.assert_close(blob["mean"][0].float(), mean[0], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(blob["mean_flip"][0].float(), module.autoencoder.posterior(image.flip(-1))[0][0], atol=2e-3, rtol=2e-3)
    stamp = files[0].stat().st_mtime_ns
    run(train_cfg(*overrides, f"paths.run_dir={tmp_path / 'again'}"))  # the same autoencoder: the file is reused
    assert files[0].stat().st_mtime_ns == stamp
    with torch.no_grad():
        module.autoencoder.autoencoder.dec_out[-1].bias.add_(1.0)
    assert weights_hash(module.autoencoder) not in files[0].name  # new weights, new key: the old file no longer matches
