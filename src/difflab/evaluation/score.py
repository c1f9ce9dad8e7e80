"""Sampling a model into a `MetricSuite`, timing it, and the `metrics.json` record that compare.py reads."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from difflab.conditions import Requests
from difflab.evaluation.suite import MetricSuite
from difflab.utils.cluster import reduce_scalar, shard, world
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
) -> dict[str, float]:
    """Every rank samples its contiguous share of images 0..n-1 (per-sample seeds) and feeds the suite.

    Image i gets the condition `requests[i]` (by default the model's `condition.draw(n)`: class i mod K; see
    `difflab.conditions`), and the suite checks it (class accuracy, vector MAE, CLIP score of its text);
    `uncond` (e.g. a negative prompt's context) is guidance's unconditional branch.

    Returns the suite's values plus `samples_per_sec` (n / the slowest rank's sampling time,
    sampling only: the metric networks are not timed) and `nfe` (network evaluations per image).
    Collective under DDP: every rank must call it.
    """
    rank, size = world()
    part = shard(n, rank, size)
    device = torch.device(getattr(module, "device", "cpu"))
    elapsed, nfe = 0.0, 0
    requests = module.condition.draw(n) if requests is None else requests
    extra = {"uncond": uncond} if uncond is not None else {}
    progress = Progress("sampling (and features)", len(part), "images", enabled=rank == 0)
    for start in range(part.start, part.stop, batch_size):
        b = min(batch_size, part.stop - start)
        index = torch.arange(start, start + b)
        asked = requests[index] if len(requests) else requests
        cond = module.condition.to_net(asked.values)
        cuda_sync(device)
        t0 = time.perf_counter()
        images, nfe = module.generate(b, seed=seed, batch_size=b, cond=cond, first_index=start, progress=progress, **extra)
        cuda_sync(device)
        elapsed += time.perf_counter() - t0
        suite.update(images, index, asked.texts, labels=asked.labels, cond=asked.vectors)
        if sink is not None:
            sink(images, index)
    progress.close()
    values = suite.compute()
    slowest = reduce_scalar(elapsed, dist.ReduceOp.MAX, suite.device)
    values["samples_per_sec"] = n / slowest if slowest > 0 else math.nan
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
        "variant": choices.get("variant") or choices.get("model") or (type(module).__name__ if module is not None
                                                                      else "images"),  # variant=: its own name
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


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write a metrics.json (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)
    return path
