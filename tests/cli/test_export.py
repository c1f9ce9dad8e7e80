"""Export to diffusers: the weight mapping is a bijection, the exported folder loads offline in diffusers, its UNet
computes difflab's network to 1e-4, a DDIM sample from diffusers equals difflab's on the same noise, the model card
is written, and what has no diffusers equivalent is a ConfigError naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import TINY_NET, compose_config
from difflab.errors import ConfigError
from difflab.nets import ClassEmbedding, UNet, VectorEmbedding
from difflab.nets.diffusers_map import convert_state, unet2d_config, weight_table

diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")

EXPORTABLE = [*TINY_NET, "+model.net.norm_groups=8"]  # base 8: groups of 8 divide every channel count


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (zero-initialised output layers would make every comparison trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return module


def make_checkpoint(root: Path, *overrides: str) -> Path:
    """A difflab checkpoint (state_dict, EMA and resolved run config, as train.py writes them) of random weights."""
    cfg = compose_config("train", ["logger=csv", "metrics=none", *EXPORTABLE, *overrides], root)
    module = perturbed(instantiate(cfg.model))
    config = OmegaConf.to_container(cfg, resolve=True)
    config["choices"] = {"data": "digits", "model": "ddpm"}
    state = module.state_dict()
    ema = {"params": {k: v.clone() for k, v in module.named_parameters()}}
    path = root / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "ema": ema, "config": config, "global_step": 7, "train_images_seen": 28}, path)
    return path


def export(root: Path, ckpt: Path, *overrides: str) -> Path:
    """Run export.py's code on a composed config; returns the folder."""
    from difflab.cli.export import run

    cfg = compose_config("export", [f"ckpt={ckpt}", f"out={root}/exported", "card.n=4", "sampler.steps=4", *overrides], root)
    return run(cfg)["out"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, exported folder) of a tiny unconditional pixel model, its run folder holding a metrics.json."""
    root = tmp_path_factory.mktemp("export")
    ckpt = make_checkpoint(root)
    (root / "run" / "metrics.json").write_text(json.dumps({"values": {"fid": 123.5}, "n_samples": 8, "protocol": {}}))
    return ckpt, export(root, ckpt)


NETS = {
    "tiny": dict(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
                 num_heads=1, norm_groups=8),
    "plain_norm_heads4": dict(in_channels=1, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                              attention_resolutions=(8,), num_heads=4, use_scale_shift_norm=False),
    "class_head_channels": dict(in_channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=2,
                                attention_resolutions=(8,), head_channels=8, norm_groups=8, emb_channels=96),
}


@pytest.mark.parametrize("name", list(NETS))
def test_weight_table_is_a_bijection_and_the_networks_agree(name):
    kw = dict(NETS[name], resolution=16)
    cond = ClassEmbedding(3, 96) if "emb_channels" in kw else None
    net = perturbed(UNet(**kw, cond_embed=cond))
    config = unet2d_config(net, kw, 16)
    ref = diffusers.UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    table = weight_table(net)
    targets = [t for names in table.values() for t in names]
    assert len(targets) == len(set(targets)) and set(targets) == set(ref.state_dict())  # one-to-one and onto
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    ref.load_state_dict(convert_state(net.state_dict(), table), strict=True)
    back = convert_state(ref.state_dict(), table, to_diffusers=False)
    assert back.keys() == net.state_dict().keys() and all(torch.equal(back[k], v) for k, v in net.state_dict().items())
    x, t = torch.randn(2, kw["in_channels"], 16, 16), torch.tensor([3.0, 731.5])
    labels = torch.tensor([0, 3]) if cond is not None else None  # 3 = the null class
    with torch.no_grad():
        want = net(x, t, torch.tensor([0, -1]) if cond is not None else None)
        got = ref(x, t, class_labels=labels).sample
    assert (got - want).abs().max() < 1e-4


def test_default_ddpm_net_has_the_parameter_count_of_its_unet2dmodel():
    kw = dict(in_channels=3, base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(16,),
              resolution=32, num_heads=4)
    net = UNet(**kw)
    ref = diffusers.UNet2DModel(**{k: v for k, v in unet2d_config(net, kw, 32).items() if not k.startswith("_")})
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters()) == 6_949_187


@pytest.mark.parametrize("kw,key", [
    (dict(num_heads=2, attention_resolutions=(16,)), "model.net.num_heads"),  # heads of 4 and 8 channels
    (dict(norm_groups=32), "model.net.norm_groups"),                          # 8 channels: difflab used 8 groups
    (dict(context_dim=12), "model.net.context_dim"),
    (dict(cond_embed=VectorEmbedding(2, 32)), "model.net.cond_embed"),
    (dict(_target_="difflab.nets.KLAutoencoder"), "model.net._target_"),
])
def test_a_net_without_diffusers_equivalent_names_the_key(kw, key):
    base = dict(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                resolution=16, num_heads=1, norm_groups=8)
    base.update(kw)
    net = UNet(**{k: v for k, v in base.items() if not k.startswith("_")})
    with pytest.raises(ConfigError, match=f"`{key}`"):
        unet2d_config(net, base, 16)


def test_exported_folder_loads_offline_and_computes_the_same_network(exported):
    from difflab.lit.checkpoint import load_module

    ckpt, folder = exported
    pipe = diffusers.DDPMPipeline.from_pretrained(folder, local_files_only=True)
    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert isinstance(pipe.unet, diffusers.UNet2DModel) and isinstance(pipe.scheduler, diffusers.DDPMScheduler)
    module = load_module(ckpt)
    assert torch.allclose(pipe.scheduler.betas.double(), module.scheduler.betas, atol=1e-7)
    assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.scheduler.config.num_train_timesteps == 1000
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([0.0, 417.0, 999.0])
    with torch.no_grad():
        assert (unet(x, t).sample - module.net(x, t)).abs().max() < 1e-4


def test_ddim_in_diffusers_equals_difflab_ddim_on_the_same_noise(exported):
    from difflab.lit.checkpoint import load_module
    from difflab.samplers import SamplerSpec, StackedGenerator, sample_seeds

    ckpt, folder = exported
    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    scheduler = diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    scheduler.set_timesteps(8)
    x = StackedGenerator(sample_seeds(3, 2)).randn((2, 1, 16, 16))  # the noise difflab draws for images 0, 1 of seed 3
    with torch.no_grad():
        for t in scheduler.timesteps:  # the exported clip_sample=True: x0 clipped to [-1, 1], eps recomputed from it
            x = scheduler.step(unet(x, t).sample, t, x, use_clipped_model_output=True).prev_sample
    images, nfe = load_module(ckpt).generate(2, seed=3, sampler=SamplerSpec("ddim", steps=8, clip_denoised=True))
    assert nfe == 8 and (images - x.clamp(-1, 1)).abs().max() < 1e-4


def test_model_card_names_config_data_metrics_and_samples(exported):
    _, folder = exported
    card = (folder / "README.md").read_text()
    meta = json.loads((folder / "difflab.json").read_text())
    assert card.startswith("---\nlibrary_name: diffusers")
    for part in ("## Use", "DDPMPipeline.from_pretrained", "## Data", "digits, resolution 16", "| fid | 123.5 |",
                 "![samples](samples.png)", "## Training config", "base_channels: 8"):
        assert part in card, part
    assert (folder / "samples.png").stat().st_size > 0
    assert meta["global_step"] == 7 and meta["condition"] == {"kind": "none"} and meta["use_ema"] is True


def test_class_conditional_export_uses_diffusers_class_embedding(tmp_path):
    from difflab.lit.checkpoint import load_module

    ckpt = make_checkpoint(tmp_path, "model=cond", "model.net.emb_channels=32")
    folder = export(tmp_path, ckpt, "card.n=0")
    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    assert unet.config.num_class_embeds == 11  # ten digits and the null class
    module = load_module(ckpt)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5.0, 600.0])
    with torch.no_grad():
        want = module.net(x, t, torch.tensor([4, -1]))
        assert (unet(x, t, class_labels=torch.tensor([4, 10])).sample - want).abs().max() < 1e-4
    assert json.loads((folder / "difflab.json").read_text())["condition"] == {"kind": "class_label", "num_classes": 10}


def test_continuous_schedules_and_difflab_autoencoders_are_refused(tmp_path):
    from difflab.lit.checkpoint import load_module
    from difflab.lit.pipelines import diffusers_vae, export_pipeline

    ckpt = make_checkpoint(tmp_path, "scheduler=edm")
    with pytest.raises(ConfigError, match="`scheduler`.*ddpm_linear"):
        export_pipeline(load_module(ckpt), tmp_path / "out")

    class Fake:  # a latent module on difflab's KL autoencoder
        from difflab.nets.autoencoder import KLAutoencoder, KLLatent

        autoencoder = KLLatent(KLAutoencoder(in_channels=1, latent_channels=2, base_channels=8, channel_mult=(1, 2),
                                             resolution=16, norm_groups=8), scale_factor=1.0)

    with pytest.raises(ConfigError, match="`model.autoencoder`.*pads \\(0, 1, 0, 1\\)"):
        diffusers_vae(Fake())


def test_latent_model_on_a_pretrained_autoencoder_exports_as_an_ldm_pipeline_and_loads_back(tmp_path):
    from difflab.lit.checkpoint import load_module
    from difflab.lit.pipelines import load_diffusers_pipeline
    from fakes import tiny_vae_folder

    vae = tiny_vae_folder(tmp_path / "vae", scaling_factor=0.5)
    ckpt = make_checkpoint(tmp_path, "model=ldm", "model/autoencoder=pretrained", f"model.autoencoder.path={vae}",
                           "model.autoencoder.downsample_factor=2", "data.channels=3")
    folder = export(tmp_path, ckpt, "card.n=0")
    pipe = diffusers.LDMPipeline.from_pretrained(folder, local_files_only=True)
    assert isinstance(pipe.vqvae, diffusers.AutoencoderKL) and pipe.vqvae.config.scaling_factor == 0.5
    module, back = load_module(ckpt), load_diffusers_pipeline(str(folder))
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 900.0])
    with torch.no_grad():
        assert (pipe.unet(z, t).sample - module.net(z, t)).abs().max() < 1e-4
        assert torch.allclose(back.decode(z), module.decode(z), atol=1e-5)
    assert back.image_shape == (3, 16, 16) and back.latent_shape == (4, 8, 8)
