"""LoRA: training with peft (`python train.py model=lora`), the web UI file it writes, and LoRA files of every
format merged at sampling, matched to diffusers' `load_lora_weights` on the same noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from fakes import SD_SCHEDULER, fake_captioned_images, tiny_sd_pipeline, tiny_sdxl_pipeline

diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")
pytest.importorskip("peft", reason="peft (sd / dev extras) trains LoRAs and backs diffusers' LoRA loading")

PROMPT, NEGATIVE = "a photo of a mackerel running on a playground", "blurry, low quality"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):  # noqa: ANN001, ANN201
    """(SD folder, LoRA file, run folder): three LoRA steps on the tiny SD pipeline (a large LR: a visible update)."""
    from difflab.api.training import run

    root = tmp_path_factory.mktemp("lora")
    tiny_sd_pipeline().save_pretrained(root / "sd")
    data = fake_captioned_images(root / "pairs", n=8)
    cfg = compose_config("train", ["model=lora", f"base={root / 'sd'}", "data=image_text", f"data.root={data}",
                                   "data.resolution=16", "data.batch_size=2", "data.num_workers=0",
                                   "trainer.max_steps=3", "trainer.limit_val_batches=1", "logger=csv",
                                   "model.optimizer.lr=3e-2", "model.rank=2", "model.alpha=4", "sampler.steps=2",
                                   "callbacks.sample_grid.n=2", "callbacks.checkpoint_last.every_n_train_steps=3"],
                         root)
    out = run(cfg)
    return root / "sd", out["run_dir"] / "lora.safetensors", out["run_dir"]


def _latents(module, z, lora=None):  # noqa: ANN001, ANN202
    from difflab.lit.lora import apply_loras
    from difflab.lit.stable_diffusion import sd_scheduler
    from difflab.samplers import Edit, SamplerSpec

    apply_loras(module, lora or [])
    module.denoiser.scheduler = sd_scheduler(SD_SCHEDULER)
    images, _ = module.generate(1, cond=module.encode_prompts([PROMPT]), uncond=module.encode_prompts([NEGATIVE]),
                                sampler=SamplerSpec("euler", steps=4), guidance_scale=7.5, edit=Edit(noise=z))
    return (images + 1) / 2  # in [0, 1], as diffusers' output_type="pt"


def test_trained_lora_round_trips_through_diffusers_load_lora_weights(trained) -> None:
    """train -> web UI file -> diffusers' load_lora_weights (weight 0.8) gives difflab's sampling with it."""
    from safetensors import safe_open

    from difflab.lit.stable_diffusion import load_stable_diffusion

    folder, file, _ = trained
    with safe_open(str(file), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert all(k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)
    assert metadata["ss_network_dim"] == "2" and metadata["ss_base_model_version"] == "sd_v1"
    module = load_stable_diffusion(str(folder))
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    base, got = _latents(module, z), _latents(module, z, [f"{file}:0.8"])
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(SD_SCHEDULER)
    pipe.load_lora_weights(str(file), adapter_name="trained")
    pipe.set_adapters(["trained"], adapter_weights=[0.8])
    want = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=7.5, latents=z.clone(),
                output_type="pt").images
    assert (got - base).abs().max() > 1e-2  # the LoRA changes the image ...
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)  # ... as diffusers applies it
    torch.testing.assert_close(_latents(module, z), base)  # [] restores the original weights exactly


def test_the_training_run_samples_like_its_base_with_the_file_merged(trained) -> None:
    """The run's checkpoint (peft adapters, unmerged) and its base + lora.safetensors merged make the same image."""
    from difflab.lit.checkpoint import load_module
    from difflab.lit.stable_diffusion import load_stable_diffusion

    folder, file, run_dir = trained
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    adapted = load_module(run_dir / "checkpoints" / "last.ckpt")
    merged = _latents(load_stable_diffusion(str(folder)), z, [str(file)])
    torch.testing.assert_close(_latents(adapted, z), merged, atol=1e-4, rtol=1e-5)


def _as_peft(file: Path, out: Path, old: bool = False) -> Path:
    """The same LoRA in diffusers' formats: peft (unet.<module>.lora_A/B.weight + .alpha) or the older .lora.down/up."""
    from safetensors.torch import load_file, save_file

    from difflab.lit.lora import lora_components  # noqa: F401  (the module names are diffusers')

    tensors = load_file(str(file))
    unet = tiny_sd_pipeline().unet
    names = {n.replace(".", "_"): n for n, _ in unet.named_modules()}
    converted = {}
    for key, value in tensors.items():
        stem, _, part = key.partition(".")
        module = "unet." + names[stem[len("lora_unet_"):]]
        suffix = {"lora_down.weight": ".lora.down.weight" if old else ".lora_A.weight",
                  "lora_up.weight": ".lora.up.weight" if old else ".lora_B.weight", "alpha": ".alpha"}[part]
        converted[module + suffix] = value
    save_file(converted, str(out))
    return out


def test_diffusers_and_peft_files_merge_like_the_web_ui_file(trained, tmp_path: Path) -> None:
    from difflab.lit.stable_diffusion import load_stable_diffusion

    folder, file, _ = trained
    module = load_stable_diffusion(str(folder))
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    want = _latents(module, z, [f"{file}:0.5"])
    for old in (False, True):
        other = _as_peft(file, tmp_path / f"peft{old}.safetensors", old)
        torch.testing.assert_close(_latents(module, z, [f"{other}:0.5"]), want)
    two = _latents(module, z, [f"{file}:0.25", f"{file}:0.25"])  # two files add up
    torch.testing.assert_close(two, want, atol=1e-5, rtol=1e-5)


def test_sdxl_files_in_stability_layout_merge_as_diffusers_loads_them(tmp_path: Path) -> None:
    """A kohya SDXL file names UNet modules in Stability's layout (input_blocks_3_1_...): mapped as diffusers maps it."""
    from safetensors.torch import save_file

    from difflab.lit.lora import apply_loras
    from difflab.lit.stable_diffusion import load_stable_diffusion

    pipe = tiny_sdxl_pipeline()
    pipe.save_pretrained(tmp_path / "sdxl")
    gen = torch.Generator().manual_seed(3)
    sgm = {"input_blocks_3_1": "down_blocks.1.attentions.0", "middle_block_1": "mid_block.attentions.0",
           "output_blocks_1_1": "up_blocks.0.attentions.1"}  # layers_per_block = 1: 2 resnets per input level
    tensors = {}
    for stability, name in sgm.items():
        for proj in ("to_q", "to_v"):
            module = pipe.unet.get_submodule(f"{name}.transformer_blocks.0.attn2.{proj}")
            stem = f"lora_unet_{stability}_transformer_blocks_0_attn2_{proj}"
            tensors[f"{stem}.lora_down.weight"] = torch.randn(2, module.in_features, generator=gen) * 0.3
            tensors[f"{stem}.lora_up.weight"] = torch.randn(module.out_features, 2, generator=gen) * 0.3
            tensors[f"{stem}.alpha"] = torch.tensor(1.0)
    save_file(tensors, str(tmp_path / "sgm.safetensors"))
    module = load_stable_diffusion(str(tmp_path / "sdxl"))
    patch = apply_loras(module, [str(tmp_path / "sgm.safetensors")])
    assert patch.applied[0]["layers"] == 6
    pipe.load_lora_weights(str(tmp_path / "sgm.safetensors"))
    pipe.fuse_lora()
    for name in sgm.values():
        for proj in ("to_q", "to_v"):
            path = f"{name}.transformer_blocks.0.attn2.{proj}"
            torch.testing.assert_close(module.net.unet.get_submodule(path).weight, pipe.unet.get_submodule(path).weight,
                                       atol=1e-6, rtol=1e-5)


def test_lora_mistakes_are_clear_errors(trained, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from difflab.errors import ConfigError, IncompatibleCheckpointError, MissingFileError
    from difflab.lit.lora import apply_loras
    from difflab.lit.stable_diffusion import load_stable_diffusion

    folder, file, _ = trained
    tiny_sdxl_pipeline().save_pretrained(tmp_path / "sdxl")
    sdxl = load_stable_diffusion(str(tmp_path / "sdxl"))
    before = {k: v.clone() for k, v in sdxl.state_dict().items()}
    with pytest.raises(IncompatibleCheckpointError, match=r"(?s)`lora`.*made for sd_v1.*no module of that name and shape"):
        apply_loras(sdxl, [str(file)])
    assert all(torch.equal(before[k], v) for k, v in sdxl.state_dict().items())  # nothing merged
    with pytest.raises(MissingFileError, match=r"nope\.safetensors.*`lora`"):
        apply_loras(sdxl, [f"{tmp_path / 'nope.safetensors'}:0.8"])
    with pytest.raises(ConfigError, match=r"`lora`"):
        apply_loras(sdxl, [{"path": str(file), "weight": "strong"}])
    save_file({"lora_unet_x.hada_w1_a": torch.zeros(1)}, str(tmp_path / "loha.safetensors"))
    with pytest.raises(IncompatibleCheckpointError, match=r"LyCORIS"):
        apply_loras(sdxl, [str(tmp_path / "loha.safetensors")])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match=r"junk\.safetensors.*`lora`"):
        apply_loras(sdxl, [str(tmp_path / "junk.safetensors")])


def test_a_caption_trains_a_text_model_on_uncaptioned_images(trained, tmp_path: Path) -> None:
    """data=image_folder caption="...": every image gets the caption (DreamBooth-style)."""
    from PIL import Image

    from difflab.api.training import run

    folder, _, _ = trained
    (tmp_path / "images").mkdir()
    for i in range(8):
        Image.new("RGB", (16, 16), (30 * i, 20, 200)).save(tmp_path / "images" / f"{i}.png")
    cfg = compose_config("train", ["model=lora", f"base={folder}", "data=image_folder", f"data.root={tmp_path / 'images'}",
                                   "data.resolution=16", "caption=a photo of sks fish", "debug=fast", "logger=csv", "data.batch_size=2"],
                         tmp_path)
    assert cfg.sampler.name == "dpmpp_2m" and cfg.callbacks.ema is None
    out = run(cfg)
    assert out["global_step"] == 1 and (out["run_dir"] / "lora.safetensors").is_file()


def test_parse_lora_list() -> None:
    from difflab.nets.lora import parse_lora_list

    assert parse_lora_list(["a.safetensors:0.8", "b.safetensors", r"C:\x\c.safetensors:-0.5"]) == [
        ("a.safetensors", 0.8), ("b.safetensors", 1.0), (r"C:\x\c.safetensors", -0.5)]
    assert parse_lora_list(None) == [] and parse_lora_list("a.safetensors:2") == [("a.safetensors", 2.0)]


def test_lora_on_a_difflab_checkpoint_and_the_comparison_row(train_cfg, tmp_path: Path) -> None:
    """model=lora on a difflab UNet: its adapters sit on difflab's attention layers, and a metrics row of the base
    with the file merged names it."""
    from difflab.api.training import run
    from difflab.evaluation.score import metrics_record
    from difflab.lit.checkpoint import load_module
    from difflab.lit.lora import apply_loras
    from difflab.samplers import SamplerSpec

    base = run(train_cfg("trainer.max_steps=2", "callbacks.checkpoint_last.every_n_train_steps=2", "metrics=none",
                         f"paths.run_dir={tmp_path / 'base'}"))
    cfg = train_cfg("model=lora", f"base={base['last_ckpt']}", "trainer.max_steps=3", "model.optimizer.lr=0.3",
                    "callbacks.checkpoint_last.every_n_train_steps=3", f"paths.run_dir={tmp_path / 'lora'}", tiny=False)
    out = run(cfg)
    file = out["run_dir"] / "lora.safetensors"
    module = load_module(base["last_ckpt"])
    spec = SamplerSpec("ddim", steps=3)
    plain, _ = module.generate(2, sampler=spec)
    apply_loras(module, [f"{file}:1"])
    merged, _ = module.generate(2, sampler=spec)
    adapted, _ = load_module(out["last_ckpt"]).generate(2, sampler=spec)
    assert (merged - plain).abs().max() > 5e-4  # the attention of a 2-step base matters little: a small change ...
    torch.testing.assert_close(merged, adapted, atol=2e-5, rtol=1e-5)  # ... reproduced far below its size
    record = metrics_record(kind="evaluate", values={}, protocol={}, module=module, n_samples=2, seed=0, run_dir=tmp_path)
    assert record["variant"].endswith(" + lora:1") and record["lora"][0]["path"] == str(file)
    assert json.loads(json.dumps(record, default=str))["lora"][0]["weight"] == 1.0
