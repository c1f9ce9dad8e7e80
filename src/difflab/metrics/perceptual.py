"""LPIPS diversity and CLIP score: torchmetrics' networks, difflab's weight resolution and DDP states."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from difflab.metrics.inception import to_uint8_rgb
from difflab.metrics.weights import ALEXNET, file_hash, resolve_clip, resolve_weights

LPIPS_MIN_SIZE = 64  # AlexNet's five stages need at least ~64 px; smaller images are upsampled (bilinear)


def lpips_network(alexnet_weights: str | None = None, download: bool = True) -> tuple[nn.Module, str]:
    """torchmetrics' LPIPS (AlexNet, its shipped linear heads) with the backbone from resolved weights.

    Returns (network mapping two [-1, 1] batches to [N] distances, weights hash).
    """
    from torchmetrics.functional.image.lpips import _LPIPS

    path = resolve_weights(ALEXNET, alexnet_weights, download=download)
    net = _LPIPS(pretrained=True, net="alex", pnet_rand=True)  # random backbone, no download; real heads
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = {}
    for name in net.net.state_dict():  # "sliceK.<i>.weight" holds torchvision's "features.<i>.weight"
        backbone[name] = state[f"features.{name.split('.', 1)[1]}"]
    net.net.load_state_dict(backbone, strict=True)
    return net.eval().requires_grad_(False), file_hash(path)


def pair_halves(images: Tensor) -> tuple[Tensor, Tensor]:
    """Consecutive pairs (0, 1), (2, 3), ...: the pairs LPIPS diversity averages over (a trailing odd image is dropped)."""
    n = images.shape[0] // 2 * 2
    return images[0:n:2], images[1:n:2]


class LPIPSDiversity(Metric):
    """Mean LPIPS between the samples of consecutive pairs (2k, 2k+1): higher = more diverse samples.

    Shards must start at even sample indices so that every rank forms the same pairs.
    """

    full_state_update = False

    def __init__(self, net: nn.Module | Callable[[Tensor, Tensor], Tensor], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, images: Tensor) -> None:  # type: ignore[override]
        """Add [-1, 1] images [N, C, H, W] (N even): each consecutive pair contributes one distance."""
        a, b = pair_halves(images.to(self.device))
        if a.shape[0] == 0:
            return
        d = self.net(self._prepare(a), self._prepare(b)).reshape(-1)
        self.total += d.double().sum()
        self.count += d.numel()

    @staticmethod
    def _prepare(x: Tensor) -> Tensor:
        x = to_uint8_rgb(x).float() / 127.5 - 1.0  # the same 8-bit images the other metrics see
        if min(x.shape[-2:]) < LPIPS_MIN_SIZE:
            x = F.interpolate(x, size=(LPIPS_MIN_SIZE, LPIPS_MIN_SIZE), mode="bilinear", align_corners=False)
        return x

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            raise ValueError("LPIPS diversity needs at least 2 samples")
        return (self.total / self.count).float()


def clip_model_loader(name_or_path: str, download: bool = True) -> Callable[[], tuple[Any, Any]]:
    """A loader returning (CLIPModel, CLIPProcessor) for torchmetrics' CLIPScore, resolved offline-first."""
    source, local_only = resolve_clip(name_or_path, download=download)

    def load() -> tuple[Any, Any]:
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(source, local_files_only=local_only)
        return model, CLIPProcessor.from_pretrained(source, local_files_only=local_only)

    return load


class CLIPScoreMetric(Metric):
    """torchmetrics' CLIPScore (100 * max(cos(image, text), 0), averaged) on difflab's uint8 images."""

    full_state_update = False

    def __init__(self, loader: Callable[[], tuple[Any, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from torchmetrics.multimodal.clip_score import CLIPScore

        self.inner = CLIPScore(model_name_or_path=loader)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, images: Tensor, prompts: Sequence[str]) -> None:  # type: ignore[override]
        """Add [-1, 1] images [N, C, H, W] with one prompt each."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"CLIP score needs one prompt per image: {len(prompts)} prompts, {images.shape[0]} images")
        self.inner.reset()
        self.inner.update(list(to_uint8_rgb(images.to(self.device))), list(prompts))
        self.total += self.inner.score.double()
        self.count += int(self.inner.n_samples)

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            raise ValueError("CLIP score needs at least one image")
        return (self.total / self.count).clamp(min=0.0).float()  # torchmetrics clamps the mean at 0
