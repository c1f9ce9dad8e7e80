"""Images -> Inception features, the one network pass shared by FID, KID and IS.

The protocol is torch-fidelity's: uint8 RGB images at their own resolution, resized inside the
network to 299x299 with TF1-compatible bilinear interpolation, TF `inception-2015-12-05`
weights; FID/KID use the 2048-d pool features, IS the 1008 unbiased logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import torch
from torch import Tensor, nn

from difflab.data.files import to_model_range
from difflab.errors import ConfigError
from difflab.samplers.generate import SamplerSpec
from difflab.utils.weights import INCEPTION, file_hash, resolve_weights


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float images (or uint8) -> uint8 of the same shape, rounding like PNG export."""
    if images.dtype == torch.uint8:
        return images
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def quantize(images: Tensor) -> Tensor:
    """[-1, 1] images rounded to their 8-bit levels (what every metric sees), float32, same shape."""
    return to_model_range(to_uint8(images))


def to_uint8_rgb(images: Tensor) -> Tensor:
    """[-1, 1] float images (or uint8) [N, 1|3, H, W] -> uint8 [N, 3, H, W], rounding like PNG export."""
    images = to_uint8(images)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"metrics expect 1- or 3-channel images, got shape {tuple(images.shape)}")
    return images.contiguous()


class FeatureExtractor(Protocol):
    """uint8 [N, 3, H, W] -> (features [N, D] for FID/KID, logits [N, K] for IS); has `weights_hash`, and
    `no_classifier` (why its logits mean nothing, e.g. weights without a classifier head; None when they do)."""

    weights_hash: str
    no_classifier: str | None

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]: ...


def classifier_missing(fc_weight: Tensor, path: object) -> str | None:
    """Why IS cannot be computed with these weights (a zero-filled classifier head: every logit 0, IS exactly 1),
    or None when the head is there."""
    if bool(fc_weight.detach().abs().sum() > 0):
        return None
    return (f"the Inception weights '{path}' have no classifier head (the fc layer is zero-filled, so every logit "
            "is 0 and IS would be exactly 1.00); FID and KID are unaffected. To compute IS, point "
            "metrics.weights.inception at the full torch-fidelity file weights-inception-2015-12-05-6726825d.pth")


class InceptionFeatures(nn.Module):
    """torch-fidelity's FID Inception-v3, returning (2048-d pool features, 1008 unbiased logits) in float32."""

    def __init__(self, weights: str | None = None, download: bool = True) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import (
            FeatureExtractorInceptionV3,  # heavy to import; only the Inception network needs it
        )

        path = resolve_weights(INCEPTION, weights, download=download)
        self.weights_path = str(path)
        self.weights_hash = file_hash(path)
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
        )
        self._memory_format = torch.contiguous_format
        self.no_classifier = classifier_missing(self.net.fc.weight, path)

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        # On CPU, channels_last weights run the convolutions 1.5-1.7x faster (measured on 2 cores; features equal
        # to 1e-6 relative). GPUs keep the default layout (not benchmarked).
        wanted = torch.channels_last if images.device.type == "cpu" else torch.contiguous_format
        if wanted != self._memory_format:
            self.net.to(memory_format=wanted)
            self._memory_format = wanted
        features, logits = self.net(to_uint8_rgb(images))
        return features.float(), logits.float()


def grid_embed(spec: SamplerSpec, shape: tuple[int, ...], device: torch.device) -> Callable[[Tensor], Tensor] | None:
    """The features a sampler's grid=optimized measures its error in: None for pixels, else the FID Inception pool
    features of the samples clamped to [-1, 1] (quantized to 8 bits as FID sees them). The weights file is found now (a missing
    one is an error before any work); the network is built at the first call, so a cached grid never loads it."""
    if spec.grid_distance == "pixel":
        return None
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError.bad_value("sampler.grid_distance", f"inception measures 1- or 3-channel images, and "
                                    f"these samples have shape {tuple(shape)}", "Use grid_distance=pixel.")
    path = resolve_weights(replace(INCEPTION, config_key="sampler.grid_inception"), spec.grid_inception)
    nets: list[InceptionFeatures] = []

    def embed(x: Tensor) -> Tensor:
        if not nets:
            nets.append(InceptionFeatures(str(path), download=False).to(device).eval())
        return torch.cat([nets[0](x[i : i + 64].clamp(-1, 1))[0] for i in range(0, len(x), 64)])

    return embed
