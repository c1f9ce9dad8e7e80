"""x0 clipping modes: static, Imagen's dynamic thresholding, and `auto` (pixel models clamp, latent ones do not)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from difflab.diffusion.thresholding import dynamic_threshold, threshold
from difflab.errors import ConfigError
from difflab.lit import DiffusionModule
from difflab.evaluation.score import _sampler_record
from difflab.nets.autoencoder import IdentityFirstStage
from difflab.samplers import SamplerSpec
from difflab.samplers.generate import CountingDenoiser


def test_dynamic_thresholding_matches_the_imagen_formula_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 1, 8, 8, generator=g) * torch.tensor([0.2, 1.5, 4.0]).view(3, 1, 1, 1)
    out = dynamic_threshold(x0, 0.9)
    for i in range(3):
        s = max(1.0, float(np.quantile(x0[i].abs().numpy(), 0.9)))  # Saharia et al. 2022, Sec. 2.3
        np.testing.assert_allclose(out[i].numpy(), np.clip(x0[i].numpy(), -s, s) / s, rtol=1e-6, atol=1e-7)
    assert torch.equal(out[0], x0[0])  # inside the range: unchanged
    assert out.abs().max() <= 1.0
    assert torch.equal(threshold(x0, True), x0.clamp(-1, 1)) and torch.equal(threshold(x0, False), x0)


def test_bad_clipping_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match="sampler.clip_denoised.*'sometimes'"):
        SamplerSpec("ddim", 50, clip_denoised="sometimes")
    with pytest.raises(ConfigError, match="sampler.dynamic_percentile"):
        SamplerSpec("ddim", 50, clip_denoised="dynamic", dynamic_percentile=0.1)
    with pytest.raises(ValueError, match="resolve"):
        CountingDenoiser(lambda x, s, c=None: x, "auto")


@pytest.mark.parametrize("mode", ["auto", True, False, "dynamic"])
def test_auto_clips_pixel_models_only_and_the_record_says_what_ran(mode) -> None:  # noqa: ANN001
    spec = SamplerSpec("ddim", 50, clip_denoised=mode, eta=0.0)
    pixel = SimpleNamespace(sampler=spec, autoencoder=IdentityFirstStage(), condition=SimpleNamespace(guided=False))
    latent = SimpleNamespace(sampler=spec, autoencoder=object())
    expected = {"auto": (True, False)}.get(mode, (mode, mode))
    assert (DiffusionModule.sampling_spec(pixel).clip_denoised, DiffusionModule.sampling_spec(latent).clip_denoised) == expected
    pixel.sampling_spec = lambda: DiffusionModule.sampling_spec(pixel)
    record = _sampler_record(pixel, spec)
    assert record["clip_denoised"] == expected[0] and record["eta"] == 0.0 and record["steps"] == 50
    assert ("dynamic_percentile" in record) == (expected[0] == "dynamic")
