"""Stable Diffusion checkpoints driven by difflab: a tiny random SD-shaped pipeline (the real CLIP tokenizer from
../shared/assets, else a byte-level stand-in) saved in diffusers' layout, loaded through `model=sd`, and compared
with diffusers' StableDiffusionPipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from fakes import SD_SCHEDULER, tiny_sd_pipeline

diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")

PROMPT, NEGATIVE = "a photo of a mackerel running on a playground", "blurry, low quality"


@pytest.fixture(scope="module")
def sd(tmp_path_factory):  # noqa: ANN001, ANN201
    """(folder, pipeline, module): the tiny pipeline saved to a folder and loaded back by difflab."""
    from difflab.lit.stable_diffusion import load_stable_diffusion

    folder = tmp_path_factory.mktemp("sd")
    pipe = tiny_sd_pipeline()
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return folder, pipe, load_stable_diffusion(str(folder))


def _difflab_latents(module, z, sampler: str, grid: str, knobs=None, negative=NEGATIVE, scale=7.5, rescale=0.0,
                     round_t=False):  # noqa: ANN001, ANN202
    """difflab's guided sampling of the SD latents from the standard-normal z (no decoding)."""
    from difflab.diffusion.guidance import guided
    from difflab.lit.stable_diffusion import sd_scheduler
    from difflab.samplers import Edit, SamplerSpec, generate

    scheduler = sd_scheduler(SD_SCHEDULER, grid=grid)
    if round_t:  # diffusers' DPMSolverMultistepScheduler feeds the UNet round(t(sigma)) on Karras grids
        exact = scheduler.sigma_to_t
        scheduler.sigma_to_t = lambda s: exact(s).round()
    module.denoiser.scheduler = scheduler
    cond = module.encode_prompts([PROMPT] * z.shape[0])
    fn = guided(module.denoiser, scale, rescale, null=module.encode_prompts([negative]))
    latents, _ = generate(fn, scheduler, SamplerSpec(sampler, steps=4, **(knobs or {})), n=z.shape[0],
                          shape=module.latent_shape, cond=cond, edit=Edit(noise=z))
    return latents, scheduler


CASES = {  # difflab (sampler, grid, knobs) vs diffusers (scheduler, config changes); Euler leading: test below
    "ddim-leading": ("ddim", "leading", {"eta": 0.0}, "DDIMScheduler", {"set_alpha_to_one": True}),
    "heun-leading": ("heun", "leading", {}, "HeunDiscreteScheduler", {}),
    "dpmpp_2m-trailing": ("dpmpp_2m", "trailing", {}, "DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}),
    "euler-karras": ("euler", "karras", {}, "EulerDiscreteScheduler", {"use_karras_sigmas": True, "timestep_spacing": "linspace"}),
    "dpmpp_2m-karras": ("dpmpp_2m", "karras", {}, "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_samplers_match_the_diffusers_pipeline(sd, case) -> None:
    _, pipe, module = sd
    name, grid, knobs, cls, change = CASES[case]
    pipe.scheduler = getattr(diffusers, cls).from_config({**SD_SCHEDULER, **change})
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    got, scheduler = _difflab_latents(module, z, name, grid, knobs, round_t=case == "dpmpp_2m-karras")
    start = z  # DDIM / DPM-Solver: latents in the VP space, x_T = z, as difflab's x_T = sqrt(1 + sigma_max^2) z
    if cls in ("EulerDiscreteScheduler", "HeunDiscreteScheduler"):  # sigma-view latents x_T = init_noise_sigma * z,
        sigma0 = float(pipe.scheduler.sigmas[0])  # where init_noise_sigma = sigma_max (not sqrt(1 + sigma_max^2)) on linspace
        start = z * scheduler.prior_std(sigma0) / pipe.scheduler.init_noise_sigma
    want = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=7.5, latents=start.clone(),
                output_type="latent").images
    assert want.abs().max() > 1.0  # a real signal, not a collapsed output
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-5)


def test_module_generate_decodes_like_the_pipeline_with_guidance_rescale(sd) -> None:
    from difflab.lit.stable_diffusion import sd_scheduler
    from difflab.samplers import Edit, SamplerSpec

    _, pipe, module = sd
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(SD_SCHEDULER)
    module.denoiser.scheduler = sd_scheduler(SD_SCHEDULER)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    images, nfe = module.generate(2, cond=module.encode_prompts([PROMPT] * 2), uncond=module.encode_prompts([NEGATIVE]),
                                 sampler=SamplerSpec("euler", steps=5), guidance_scale=9.0, guidance_rescale=0.7,
                                 edit=Edit(noise=z))
    want = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=9.0, guidance_rescale=0.7,
                latents=z.clone(), num_images_per_prompt=2, output_type="pt").images
    assert images.shape == (2, 3, 16, 16) and nfe == 5
    torch.testing.assert_close((images + 1) / 2, want, atol=1e-4, rtol=1e-5)


def test_negative_prompt_is_the_unconditional_branch_and_changes_the_output(sd) -> None:
    _, _, module = sd
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with_negative, _ = _difflab_latents(module, z, "euler", "leading", negative=NEGATIVE)
    empty, _ = _difflab_latents(module, z, "euler", "leading", negative="")
    assert (with_negative - empty).abs().max() > 1e-2
    # at guidance scale 0 the output is the unconditional model on the negative prompt alone
    neg_only, _ = _difflab_latents(module, z, "euler", "leading", negative=NEGATIVE, scale=0.0)
    from difflab.diffusion.guidance import guided
    from difflab.samplers import Edit, SamplerSpec, generate

    cond = module.encode_prompts([NEGATIVE])
    plain, _ = generate(guided(module.denoiser, 1.0, null=module.condition.null), module.scheduler, SamplerSpec("euler", steps=4), n=1,
                        shape=module.latent_shape, cond=cond, edit=Edit(noise=z))
    torch.testing.assert_close(neg_only, plain)


def test_sample_py_model_sd_with_a_random_seed(sd, tmp_path: Path) -> None:
    from difflab.cli.sample import run

    folder, _, _ = sd
    cfg = compose_config("sample", ["model=sd", f"pipeline.path={folder}", f"prompt='({PROMPT}:1.3)'",
                                    f"negative_prompt='{NEGATIVE}'", "guidance_scale=7.5", "steps=3", "seed=-1",
                                    "sampler=euler", "scheduler.grid=karras", "n=2", "device=cpu"], tmp_path)
    assert cfg.sampler.steps == 3 and cfg.model.path == str(folder)
    out = run(cfg)
    record = json.loads((out["out_dir"] / "samples.json").read_text())
    assert 0 <= record["seed"] < 2**63 and record["nfe"] == 3 and record["sampler"]["name"] == "euler"
    assert record["prompt"].startswith("(") and "grid='karras'" in record["scheduler"]
    assert out["images"].shape == (2, 3, 16, 16) and (out["out_dir"] / "images" / "000001.png").is_file()


def test_v_prediction_checkpoint_matches_the_pipeline(tmp_path: Path) -> None:
    from difflab.lit.stable_diffusion import load_stable_diffusion

    pipe = tiny_sd_pipeline(prediction="v_prediction")
    pipe.save_pretrained(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    module = load_stable_diffusion(str(tmp_path))
    assert module.scheduler.prediction == "v"
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config({**SD_SCHEDULER, "prediction_type": "v_prediction"})
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    from difflab.diffusion.guidance import guided
    from difflab.samplers import Edit, SamplerSpec, generate

    fn = guided(module.denoiser, 5.0, null=module.encode_prompts([""]))
    got, _ = generate(fn, module.scheduler, SamplerSpec("euler", steps=4), n=1, shape=module.latent_shape,
                      cond=module.encode_prompts([PROMPT]), edit=Edit(noise=z))
    want = pipe(PROMPT, num_inference_steps=4, guidance_scale=5.0, latents=z.clone(), output_type="latent").images
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-5)


def test_missing_weights_offline_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    from difflab.lit.stable_diffusion import load_stable_diffusion
    from difflab.nets.text import PretrainedNotFoundError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("DIFFLAB_OFFLINE", "1")
    with pytest.raises(PretrainedNotFoundError, match=r"(?s)not found: folder '.*nowhere'.*pipeline\.path.*huggingface-cli download"):
        load_stable_diffusion(str(tmp_path / "nowhere"))
    with pytest.raises(PretrainedNotFoundError, match=r"(?s)'someone/sd-model' is not in the Hugging Face cache.*pipeline\.path"):
        load_stable_diffusion("someone/sd-model")
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(PretrainedNotFoundError, match=r"lacks vae/, text_encoder/, tokenizer/, scheduler/"):
        load_stable_diffusion(str(tmp_path / "partial"))


def test_evaluate_model_sd_prompts_reports_clip_score_and_fid_against_a_reference_folder(sd, tmp_path: Path) -> None:
    from difflab.cli import evaluate
    from difflab.evaluation import Networks
    from fakes import fake_images, tiny_extractor, tiny_lpips
    from fakes import tiny_clip as _tiny_clip

    folder, _, _ = sd
    (tmp_path / "prompts.txt").write_text(f"{PROMPT}\n\n(a red fish:1.3)\n")
    model, processor = _tiny_clip()
    networks = Networks(inception=tiny_extractor, lpips=tiny_lpips, clip=lambda: (model, processor))
    base = ["model=sd", f"pipeline.path={folder}", f"prompts={tmp_path / 'prompts.txt'}", "steps=2", "sampler=euler",
            f"negative_prompt='{NEGATIVE}'", "logger=csv", "device=cpu", "seed=3"]
    record = evaluate.run(compose_config("evaluate", base, tmp_path / "a"), networks=networks)
    assert record["n_samples"] == 2 and record["n_prompts"] == 2 and record["variant"] == "sd"
    assert set(record["values"]) == {"clip_score", "samples_per_sec", "nfe"} and record["values"]["nfe"] == 2
    assert record["values"]["clip_score"] >= 0 and record["seed"] == 3
    reference = fake_images(tmp_path / "reference", per_class=4)
    with_fid = evaluate.run(compose_config("evaluate", [*base, "n_samples=4", "data=image_folder",
                                                        f"data.root={reference}", "data.resolution=16", "metrics=fast",
                                                        "metrics.reference.n=8", "metrics.kid_subset_size=4"],
                                           tmp_path / "b"), networks=networks)
    assert {"fid", "kid", "clip_score", "samples_per_sec"} <= set(with_fid["values"]) and with_fid["n_samples"] == 4
    assert "condition_accuracy" not in with_fid["values"]
