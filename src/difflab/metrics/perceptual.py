"""LPIPS diversity and CLIP score: torchmetrics' networks, difflab's weight resolution and DDP states."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.image.lpips import _LPIPS
from torchmetrics.multimodal.clip_score import CLIPScore

from difflab.metrics.inception import quantize, to_uint8_rgb
from difflab.utils.weights import ALEXNET, file_hash, resolve_clip, resolve_weights

LPIPS_MIN_SIZE = 64  # AlexNet's five stages need at least ~64 px; smaller images are upsampled (bilinear)


def lpips_network(alexnet_weights: str | None = None, download: bool = True) -> tuple[nn.Module, str]:
    """torchmetrics' LPIPS (AlexNet, its shipped linear heads) with the backbone from resolved weights.

    Returns (network mapping two [-1, 1] batches to [N] distances, weights hash).
    """
    path = resolve_weights(ALEXNET, alexnet_weights, download=download)
    net = _LPIPS(pretrained=True, net="alex", pnet_rand=True)  # random backbone, no download; real heads
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = {}
    for name in net.net.state_dict():  # "sliceK.<i>.weight" holds torchvision's "features.<i>.weight"
        backbone[name] = state[f"features.{name.split('.', 1)[1]}"]
    net.net.load_state_dict(backbone, strict=True)
    return net.eval().requires_grad_(False), file_hash(path)


class LPIPSDiversity(Metric):
    """Mean LPIPS between the samples of pairs (2k, 2k+1) by global sample index: higher = more diverse.

    Pairs are formed by index, whatever the batching: an even-indexed image left at the end of one
    update waits for its partner in the next. Shards start at even indices (see `shard`), so every
    process count forms the same pairs.
    """

    full_state_update = False

    def __init__(self, net: nn.Module | Callable[[Tensor, Tensor], Tensor], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self._pending: tuple[int, Tensor] | None = None

    def update(self, images: Tensor, index: Tensor) -> None:  # type: ignore[override]
        """Add [-1, 1] images [N, C, H, W] with their global sample indices [N] (ascending)."""
        images, index = images.to(self.device), index.reshape(-1).cpu()
        if self._pending is not None and index.numel() and int(index[0]) == self._pending[0] + 1:
            images = torch.cat([self._pending[1][None], images])
            index = torch.cat([index.new_tensor([self._pending[0]]), index])
        self._pending = None
        firsts = torch.nonzero((index[:-1] % 2 == 0) & (index[1:] == index[:-1] + 1)).reshape(-1)
        if index.numel() and int(index[-1]) % 2 == 0:
            self._pending = (int(index[-1]), images[-1].detach())
        if firsts.numel() == 0:
            return
        d = self.net(self._prepare(images[firsts]), self._prepare(images[firsts + 1])).reshape(-1)
        self.total += d.double().sum()
        self.count += d.numel()

    def reset(self) -> None:
        super().reset()
        self._pending = None

    @staticmethod
    def _prepare(x: Tensor) -> Tensor:
        x = quantize(to_uint8_rgb(x))  # the same 8-bit RGB images the other metrics see
        if min(x.shape[-2:]) < LPIPS_MIN_SIZE:
            x = F.interpolate(x, size=(LPIPS_MIN_SIZE, LPIPS_MIN_SIZE), mode="bilinear", align_corners=False)
        return x

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            raise ValueError("LPIPS diversity needs at least 2 samples")
        return (self.total / self.count).float()


class CLIPFeatures(nn.Module):
    """A CLIP model whose get_image/text_features return tensors (transformers >= 5 returns a model output
    whose `pooler_output` holds the projected embedding; torchmetrics 1.9 expects the tensor)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out: Any) -> Tensor:
        return out if isinstance(out, Tensor) else out.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def clip_model_loader(name_or_path: str, download: bool = True) -> Callable[[], tuple[Any, Any]]:
    """A loader returning (CLIPModel, CLIPProcessor) for torchmetrics' CLIPScore, resolved offline-first."""
    source, local_only = resolve_clip(name_or_path, download=download)

    def load() -> tuple[Any, Any]:
        from transformers import (  # heavy (seconds to import); only models and metrics with text encoders need it  # heavy (seconds to import); only models and metrics with text encoders need it
            CLIPModel,
            CLIPProcessor,
        )

        model = CLIPModel.from_pretrained(source, local_files_only=local_only)
        return model, CLIPProcessor.from_pretrained(source, local_files_only=local_only)

    return load


def _wrapped(loader: Callable[[], tuple[Any, Any]]) -> tuple[CLIPFeatures, Any]:
    model, processor = loader()
    return CLIPFeatures(model.eval()), processor


class CLIPScoreMetric(Metric):
    """torchmetrics' CLIPScore (100 * max(cos(image, text), 0), averaged) on difflab's uint8 images."""

    full_state_update = False

    def __init__(self, loader: Callable[[], tuple[Any, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = CLIPScore(model_name_or_path=lambda: _wrapped(loader))
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
