"""SDXL folders driven by difflab (`model=sd pipeline.path=<SDXL folder>`): tiny random parts built from diffusers
configs (tests/fakes.py), matched to diffusers' StableDiffusionXLPipeline on the same noise, and run through every
sampler, grid, prompt editing, img2img, inpainting, sample.py and evaluate.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from fakes import SDXL_SCHEDULER, tiny_sdxl_pipeline

diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")

PROMPT, NEGATIVE, OTHER = "a photo of a mackerel on a playground", "blurry, low quality", "a red fish in a pond"


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):  # noqa: ANN001, ANN201
    """(folder, pipeline, module): the tiny SDXL pipeline saved to a folder and loaded back by difflab."""
    from difflab.lit.stable_diffusion import load_stable_diffusion

    folder = tmp_path_factory.mktemp("sdxl")
    pipe = tiny_sdxl_pipeline()
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return folder, pipe, load_stable_diffusion(str(folder))


def _generate(module, z, prompt, negative, scale=5.0, steps=4, **kwargs):  # noqa: ANN001, ANN202
    from difflab.samplers import Edit, SamplerSpec

    uncond = module.encode_prompts([negative]) if negative else None
    return module.generate(z.shape[0], cond=module.encode_prompts([prompt] * z.shape[0]), uncond=uncond,
                           sampler=SamplerSpec("euler", steps=steps), guidance_scale=scale, edit=Edit(noise=z), **kwargs)


@pytest.mark.parametrize("negative", [NEGATIVE, None])  # None: the all-zero null prompt (force_zeros_for_empty_prompt)
def test_sdxl_matches_the_diffusers_pipeline(sdxl, negative) -> None:
    from difflab.lit.stable_diffusion import sd_scheduler

    _, pipe, module = sdxl
    assert module.run_config["choices"]["model"] == "sdxl" and module.net.text_time
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)
    module.denoiser.scheduler = sd_scheduler(SDXL_SCHEDULER)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    images, nfe = _generate(module, z, PROMPT, negative)
    want = pipe(PROMPT, negative_prompt=negative, num_inference_steps=4, guidance_scale=5.0, latents=z.clone(),
                num_images_per_prompt=2, output_type="pt").images
    assert images.shape == (2, 3, 16, 16) and nfe == 4
    torch.testing.assert_close((images + 1) / 2, want, atol=1e-4, rtol=1e-5)
    latents = pipe(PROMPT, negative_prompt=negative, num_inference_steps=4, guidance_scale=5.0, latents=z.clone(),
                   num_images_per_prompt=2, output_type="latent").images
    no_decode = module.decode  # the latents themselves, before the VAE
    module.decode = lambda x: x
    try:
        got, _ = _generate(module, z, PROMPT, negative)
    finally:
        module.decode = no_decode
    assert latents.abs().max() > 1.0
    torch.testing.assert_close(got.clamp(-1, 1), latents.clamp(-1, 1), atol=1e-4, rtol=1e-5)


def test_size_conditioning_reaches_the_unet_as_in_diffusers(tmp_path: Path, sdxl) -> None:
    from difflab.lit.stable_diffusion import load_stable_diffusion

    folder, pipe, base = sdxl
    module = load_stable_diffusion(str(folder), original_size=[32, 24], crop_coords=[4, 2], target_size=16)
    assert module.text_encoder.time_ids.tolist() == [[32.0, 24.0, 4.0, 2.0, 16.0, 16.0]]
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    images, _ = _generate(module, z, PROMPT, NEGATIVE, scale=3.0)
    want = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=3.0, latents=z.clone(),
                original_size=(32, 24), crops_coords_top_left=(4, 2), target_size=(16, 16), output_type="pt").images
    torch.testing.assert_close((images + 1) / 2, want, atol=1e-4, rtol=1e-5)
    plain, _ = _generate(base, z, PROMPT, NEGATIVE, scale=3.0)
    assert (plain - images).abs().max() > 1e-3  # the ids change the image


def test_prompt_editing_matches_diffusers_switching_the_embeddings_mid_run(sdxl) -> None:
    """[a:b:0.5] on 4 Euler steps is diffusers' pipeline with the prompt embeddings of b from step 3 on."""
    _, pipe, module = sdxl
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    images, _ = _generate(module, z, f"[{PROMPT}:{OTHER}:0.5]", NEGATIVE)
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(OTHER, negative_prompt=NEGATIVE, device="cpu",
                                                         num_images_per_prompt=1, do_classifier_free_guidance=True)

    def switch(pipeline, i, t, tensors):  # noqa: ANN001, ANN202
        if i == 1:  # after the second step
            return {"prompt_embeds": torch.cat([neg, embeds]), "add_text_embeds": torch.cat([neg_pooled, pooled])}
        return {}

    want = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0, latents=z.clone(),
                output_type="pt", callback_on_step_end=switch,
                callback_on_step_end_tensor_inputs=["prompt_embeds", "add_text_embeds"]).images
    torch.testing.assert_close((images + 1) / 2, want, atol=1e-4, rtol=1e-5)
    unedited, _ = _generate(module, z, PROMPT, NEGATIVE)
    assert (unedited - images).abs().max() > 1e-3


def _sampler_names() -> list[str]:
    from difflab.samplers import SAMPLERS

    return sorted(SAMPLERS)


@pytest.mark.slow
@pytest.mark.parametrize("name", _sampler_names())
def test_every_sampler_runs_sdxl_with_a_chunked_alternating_prompt(sdxl, name) -> None:
    from difflab.samplers import SamplerSpec

    _, _, module = sdxl
    cond, uncond = module.encode_prompts([f"{PROMPT} BREAK [{OTHER}|a cat]"]), module.encode_prompts([NEGATIVE])
    knobs = {"rtol": 1e-2, "atol": 1e-2} if name == "ode" else {}  # RK45 at its default tolerance: ~400 evaluations
    images, nfe = module.generate(1, sampler=SamplerSpec(name, steps=3, **knobs), cond=cond, uncond=uncond,
                                  guidance_scale=4)
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all() and nfe >= 1


@pytest.mark.parametrize("grid", ["leading", "trailing", "linspace", "karras", "logsnr"])
def test_every_grid_runs_sdxl(sdxl, grid) -> None:
    """The scheduler's grids (grid=optimized, fitted to any denoiser and condition, is tested in test_grids.py)."""
    from difflab.samplers import SamplerSpec

    _, _, module = sdxl
    images, _ = module.generate(1, sampler=SamplerSpec("dpmpp_2m", steps=3, grid=grid),
                                cond=module.encode_prompts([PROMPT]), uncond=module.encode_prompts([NEGATIVE]),
                                guidance_scale=4)
    assert torch.isfinite(images).all()


def test_sample_py_sdxl_with_unquoted_web_ui_prompts_img2img_and_inpaint(sdxl, tmp_path: Path) -> None:
    from PIL import Image

    from difflab.api.config import compose
    from difflab.cli.sample import run

    folder, _, _ = sdxl
    Image.new("RGB", (16, 16), (200, 40, 40)).save(tmp_path / "init.png")
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))
    mask.save(tmp_path / "mask.png")
    long = ", ".join(["a very detailed photo of a mackerel"] * 12)  # several 75-token chunks
    base = ["model=sd", f"pipeline.path={folder}", f"prompt=(masterpiece:1.2), a [dog:cat:0.5] in a [park|garden] BREAK {long}",
            "negative_prompt=(worst quality:1.4), [blurry|lowres]", "steps=3", "sampler=euler", "n=2", "device=cpu",
            "seed=5"]
    images = {}
    for mode in (["mode=generate"], ["mode=img2img", f"init_image={tmp_path / 'init.png'}", "strength=0.7"],
                 ["mode=inpaint", f"init_image={tmp_path / 'init.png'}", f"mask={tmp_path / 'mask.png'}"]):
        name = mode[0].split("=")[1]
        out = run(compose([*base, *mode], "sample", tmp_path / name))
        record = json.loads((out["out_dir"] / "samples.json").read_text())
        assert record["prompt"].startswith("(masterpiece:1.2), a [dog:cat:0.5]") and record["negative_prompt"].startswith("(worst")
        assert record["mode"] == name and out["images"].shape == (2, 3, 16, 16) and torch.isfinite(out["images"]).all()
        images[name] = out["images"]
    assert (images["img2img"] - images["generate"]).abs().max() > 1e-2
    assert (images["inpaint"] - images["img2img"]).abs().max() > 1e-2


def test_evaluate_model_sd_sdxl_reports_clip_score(sdxl, tmp_path: Path) -> None:
    from difflab.cli import evaluate
    from difflab.evaluation import Networks
    from fakes import tiny_clip, tiny_extractor, tiny_lpips

    folder, _, _ = sdxl
    (tmp_path / "prompts.txt").write_text(f"{PROMPT}\n[a red fish:a blue fish:0.5]\n")
    model, processor = tiny_clip()
    networks = Networks(inception=tiny_extractor, lpips=tiny_lpips, clip=lambda: (model, processor))
    record = evaluate.run(compose_config("evaluate", ["model=sd", f"pipeline.path={folder}",
                                                      f"prompts={tmp_path / 'prompts.txt'}", "steps=2", "sampler=euler",
                                                      "logger=csv", "device=cpu", "seed=3"], tmp_path), networks=networks)
    assert record["variant"] == "sdxl" and record["n_samples"] == 2
    assert set(record["values"]) == {"clip_score", "samples_per_sec", "nfe"} and record["values"]["clip_score"] >= 0


def test_sdxl_folder_missing_a_part_and_sd_with_size_keys_are_clear_errors(sdxl, tmp_path: Path) -> None:
    import shutil

    from difflab.errors import ConfigError
    from difflab.lit.stable_diffusion import load_stable_diffusion
    from difflab.nets.text import PretrainedNotFoundError
    from fakes import tiny_sd_pipeline

    folder, _, _ = sdxl
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(PretrainedNotFoundError, match=r"SDXL checkpoint.*lacks text_encoder_2/.*pipeline\.path"):
        load_stable_diffusion(str(broken))
    tiny_sd_pipeline().save_pretrained(tmp_path / "sd")
    with pytest.raises(ConfigError, match=r"`pipeline\.original_size`.*no size conditioning"):
        load_stable_diffusion(str(tmp_path / "sd"), original_size=512)
    with pytest.raises(ConfigError, match=r"`pipeline\.crop_coords`.*two numbers"):
        load_stable_diffusion(str(folder), crop_coords=[1, 2, 3])
