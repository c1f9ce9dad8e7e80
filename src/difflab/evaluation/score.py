"""Sampling a model into a `MetricSuite`, timing it, and the `metrics.json` record that compare.py reads."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from difflab.conditions import Requests
from difflab.evaluation.suite import MetricSuite
from difflab.lit.lora import lora_label
from difflab.utils.cluster import reduce_scalar, shard, world
from difflab.utils.files import write_json
from difflab.utils.progress import Progress
from difflab.utils.tensors import cuda_sync

Sink = Callable[[Tensor, Tensor], None]  # (images [B, C, H, W] in [-1, 1], global indices [B])


@torch.no_grad()
def sample_and_score(
    module: Any,
    suite: MetricSuite,
    *,
    n: int,
    seed: int,
    batch_size: int,
    requests: Requests | None = None,
    sink: Sink | None = None,
    uncond: Tensor | None = None,
    done: Mapping[int, Tensor] | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    keep: list[Tensor] | None = None,
) -> dict[str, float]:
    """Every rank samples its contiguous share of images 0..n-1 (per-sample seeds) and feeds the suite.

    Image i gets the condition `requests[i]` (by default the model's `condition.draw(n)`: class i mod K; see
    `difflab.conditions`), and the suite checks it (class accuracy, vector MAE, CLIP score of its text);
    `uncond` (e.g. a negative prompt's context) is guidance's unconditional branch. A batch whose images are all
    `done` (made by an earlier, interrupted evaluation) is scored as it is, not sampled again; `transform` turns new
    images into what the suite and `sink` get (evaluate.py: their 8-bit PNG levels, which `done` images have); the
    images of indices below 64 are appended to `keep` (a preview grid).

    Returns the suite's values plus `samples_per_sec` (images sampled here / the slowest rank's sampling time,
    sampling only: the metric networks are not timed) and `nfe` (network evaluations per image).
    Collective under DDP: every rank must call it.
    """
    rank, size = world()
    part = shard(n, rank, size)
    device = torch.device(getattr(module, "device", "cpu"))
    elapsed, nfe, sampled, done = 0.0, 0, 0, done or {}
    requests = module.condition.draw(n) if requests is None else requests
    extra = {"uncond": uncond} if uncond is not None else {}
    progress = Progress("sampling (and features)", len(part), "images", enabled=rank == 0)
    starts = list(range(part.start, part.stop, batch_size))
    redo = starts[-1:] if starts and all(i in done for i in range(part.start, part.stop)) else []  # gives the NFE
    for start in starts:
        b = min(batch_size, part.stop - start)
        index = torch.arange(start, start + b)
        asked = requests[index] if len(requests) else requests
        if start not in redo and all(i in done for i in index.tolist()):
            images = torch.stack([done[i] for i in index.tolist()])
            progress.update(b)
        else:
            cond = module.condition.to_net(asked.values)
            cuda_sync(device)
            t0 = time.perf_counter()
            images, nfe = module.generate(b, seed=seed, batch_size=b, cond=cond, first_index=start, progress=progress,
                                          **extra)
            cuda_sync(device)
            elapsed, sampled = elapsed + time.perf_counter() - t0, sampled + b
            images = transform(images) if transform is not None else images
            if sink is not None:
                sink(images, index)
        suite.update(images, index, asked.texts, labels=asked.labels, cond=asked.vectors)
        if keep is not None and start < 64:
            keep.append(images[: 64 - start])
    progress.close()
    values = suite.compute()
    slowest = reduce_scalar(elapsed, dist.ReduceOp.MAX, suite.device)
    count = reduce_scalar(float(sampled), dist.ReduceOp.SUM, suite.device)
    values["samples_per_sec"] = count / slowest if slowest > 0 else math.nan
    values["nfe"] = reduce_scalar(float(nfe), dist.ReduceOp.MAX, suite.device)
    return values


def count_params(module: torch.nn.Module) -> int:
    """Trainable and frozen parameters of the network being evaluated."""
    return sum(p.numel() for p in module.parameters())


def metrics_record(
    *,
    kind: str,
    values: dict[str, float],
    protocol: dict[str, Any],
    module: Any,
    n_samples: int,
    seed: int,
    run_dir: str | Path,
    global_step: int = 0,
    ckpt: str | None = None,
    data: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The self-describing result row: values, protocol and what was evaluated (see compare.py)."""
    config = getattr(module, "run_config", None) or {}
    choices = config.get("choices") or {}
    spec = getattr(module, "sampler", None)
    scheduler = getattr(module, "scheduler", None)
    data = dict(data or config.get("data") or {})
    return {
        "kind": kind,
        "run_dir": str(Path(run_dir).resolve()),
        "ckpt": ckpt,
        "variant": (choices.get("model") or (type(module).__name__ if module is not None else "images"))
        + lora_label(module),  # "sd + style:0.8": a LoRA merged at sampling makes a row of its own
        "scheduler": choices.get("scheduler") or (type(scheduler).__name__ if scheduler is not None else None),
        "scheduler_repr": repr(scheduler) if scheduler is not None else None,
        "sampler": _sampler_record(module, spec),
        "data": {"name": choices.get("data") or data.get("name") or str(data.get("_target_", "?")).rsplit(".", 1)[-1],
                 "resolution": data.get("resolution")},
        "params": count_params(module.net) if hasattr(module, "net") else None,
        "condition": module.condition.config() if hasattr(module, "condition") else None,
        "train_images_seen": int(getattr(module, "train_images_seen", 0)),
        "global_step": int(global_step),
        "n_samples": int(n_samples),
        "seed": int(seed),
        "values": {**{k: float(v) for k, v in values.items()},
                   **{k: None for k in protocol.get("unavailable") or {}}},  # not computed: the reason is in the protocol
        "protocol": protocol,
        **({"lora": patch.applied} if (patch := getattr(module, "lora_patch", None)) is not None else {}),
        **(extra or {}),
    }


def _sampler_record(module: Any, spec: Any) -> dict[str, Any] | None:
    """Sampler name, steps and knobs; conditional models add their classifier-free guidance scale."""
    if spec is None:
        return None
    record = (module.sampling_spec() if hasattr(module, "sampling_spec") else spec).record()  # clipping resolved
    if module.condition.guided:
        record["guidance_scale"] = float(getattr(module, "guidance_scale", 1.0))
    return record


def write_record(record: dict[str, Any], path: str | Path, key: str | None = None) -> Path:
    """Write a metrics.json through the one output writer (`difflab.utils.files.write_json`: atomic, a full disk
    named, NaN and Infinity written as null with a warning naming them)."""
    return write_json(path, record, key=key)
