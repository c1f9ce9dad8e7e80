"""Sampling throughput and the evaluate.py run, for benchmarks/gpu.py.

Sampling: 20 steps of DPM-Solver++(2M) on the same network (a `speed_nets.Pair` with `same`): difflab's
`DiffusionModule.generate` (under a bf16 autocast for bf16, as sample.py runs it) against diffusers' `DDPMPipeline`
with `DPMSolverMultistepScheduler` (dpmsolver++, order 2) on the module's network converted to a `UNet2DModel`
(`.to(bfloat16)` for bf16, as diffusers' pipelines run in half precision), each returning host images. Contestants
alternate; images/s is the median over rounds of batch / wall time of one whole run (on a CPU at batches above 8,
where a run takes minutes, one timed run each, without an untimed warm-up run).

evaluate.py: `python train.py experiment=cifar10_ddpm trainer.max_steps=1` on a CIFAR-10-format folder of random
pixels makes the checkpoint (the timing is the same as with the real images), then `python evaluate.py ckpt=...
metrics=full n_samples=10000 sampler=dpmpp_2m sampler.steps=20` is timed from start to exit, reference statistics of
the 50,000 training images included (a first run on a machine computes them; later runs read them from the cache).
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from difflab.lit import DiffusionModule
from difflab.lit.inference import channels_last_on
from difflab.lit.pipelines import diffusers_unet
from difflab.lit.stable_diffusion import diffusers_scheduler_config
from difflab.samplers import SamplerSpec
from speed_nets import Pair

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fakes import fake_cifar  # noqa: E402  (the CIFAR-10 pickle format with random pixels, shared with the tests)

STEPS = 20


def _timed(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _ours(module: DiffusionModule, batch: int, dtype: torch.dtype, device: torch.device) -> Callable[[], object]:
    """difflab: `generate` one batch, under a bf16 autocast for bf16 (as sample.py runs it)."""
    spec = SamplerSpec("dpmpp_2m", steps=STEPS)

    def run() -> object:
        with torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext():
            return module.generate(batch, seed=1, batch_size=batch, sampler=spec)

    return run


def _theirs(module: DiffusionModule, batch: int, dtype: torch.dtype, device: torch.device,
            channels_last: bool) -> Callable[[], object]:
    """diffusers: DDPMPipeline + DPMSolverMultistepScheduler (dpmsolver++, order 2) on the module's network."""
    from diffusers import DDPMPipeline, DPMSolverMultistepScheduler  # optional (the `bench` extra)

    config = diffusers_scheduler_config(module.scheduler)
    scheduler = DPMSolverMultistepScheduler.from_config({**config, "algorithm_type": "dpmsolver++", "solver_order": 2})
    unet = diffusers_unet(module).to(device=device, dtype=dtype)
    unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator(device)
    return lambda: pipe(batch_size=batch, generator=gen.manual_seed(1), num_inference_steps=STEPS,
                        output_type="pt").images.float().cpu()  # host float32 images, as difflab's generate returns


def sampling_runs(pair: Pair, batch: int, precision: str, device: torch.device,
                  both_formats: bool) -> dict[str, Callable[[], object]]:
    """The contestants at one batch size and precision: name -> a function sampling one batch (host images).
    difflab runs in its default memory format (`model.channels_last=auto`), diffusers in its own (NCHW); with
    `both_formats`, each also runs in the other format (a copy of the difflab module)."""
    module = pair.module.to(device).eval()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    runs = {"difflab": _ours(module, batch, dtype, device)}
    if both_formats:
        other = copy.deepcopy(module)
        other.channels_last = not channels_last_on(module.channels_last, device)
        runs[f"difflab/{'channels_last' if other.channels_last else 'nchw'}"] = _ours(other, batch, dtype, device)
    runs["diffusers"] = _theirs(module, batch, dtype, device, channels_last=False)
    if both_formats:
        runs["diffusers/channels_last"] = _theirs(module, batch, dtype, device, channels_last=True)
    return runs


def sampling_rows(pair: Pair, batches: list[int], precisions: list[str], rounds: int, device: torch.device,
                  both_formats: bool, compiled: bool) -> list[dict]:
    """Images/s of every contestant per (batch, precision), interleaved rounds; with `compiled`, difflab with
    `compile_sampling` too in bf16 (a copy of the module; its first run, which compiles, is untimed like every warm-up)."""
    rows = []
    for precision in precisions:
        for batch in batches:
            runs = sampling_runs(pair, batch, precision, device, both_formats)
            if compiled and precision == "bf16":
                fast = copy.deepcopy(pair.module)
                fast.compile_sampling = True
                runs["difflab/compiled"] = _ours(fast, batch, torch.bfloat16 if precision == "bf16" else torch.float32,
                                                 device)
            long = device.type == "cpu" and batch > 8  # minutes a run: no untimed warm-up, one round
            for name, run in runs.items():
                if not long or name.endswith("compiled"):
                    run()  # warm-up (and compilation)
            times: dict[str, list[float]] = {name: [] for name in runs}
            for r in range(1 if long else rounds):
                for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                    times[name].append(_timed(runs[name], device))
            rows.append({"batch": batch, "precision": precision,
                         "rates": {k: batch / statistics.median(v) for k, v in times.items()}})
    return rows


def random_inception(path: Path) -> Path:
    """torch-fidelity's FID Inception-v3 with random weights (the same network and cost; FID values meaningless)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe  # optional for this row only

    class Unloaded(fe.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: object, **kwargs: object) -> None:  # keep the random initialisation
            return None

    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}):
        net = Unloaded("inception-v3-compat", ["2048", "logits_unbiased"])
    torch.save(net.state_dict(), path)
    return path


def evaluate_row(work: Path, inception: str | None, lpips: str | None, smoke: bool, device: torch.device) -> dict:
    """Train the CIFAR-10 preset one step on random CIFAR-format data, then time evaluate.py metrics=full."""
    data = work / "cifar10"
    if not data.is_dir():
        fake_cifar(data, per_batch=4 if smoke else 10_000)
    weights = inception or str(random_inception(work / "inception_random.pth"))
    n = 8 if smoke else 10_000
    tiny = ["model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
            "model.net.num_heads=2", "data.batch_size=4"] if smoke else []
    common = ["logger=csv", f"paths.root_dir={work}", f"hydra.run.dir={work}/run_{{}}"]
    accel = [] if device.type == "cuda" else ["trainer=cpu"]
    train = ["experiment=cifar10_ddpm", f"data.root={data}", "trainer.max_steps=1", "metrics=none",
             "callbacks.sample_grid=null", "data.num_workers=0", *accel, *tiny]  # no 1000-step grid at the end
    _python("train.py", [*train, *(c.format("train") for c in common)])
    ckpt = work / "run_train" / "checkpoints" / "last.ckpt"
    metrics = ["metrics=full", f"n_samples={n}", "sampler=dpmpp_2m", f"sampler.steps={STEPS}",
               f"metrics.weights.inception={weights}", f"device={device.type}", "metrics.batch_size=500" if not smoke else
               "metrics.batch_size=4"]
    metrics += [f"metrics.weights.lpips_alexnet={lpips}"] if lpips else ["metrics.lpips_diversity=false"]
    seconds = _python("evaluate.py", [f"ckpt={ckpt}", *metrics, *(c.format("evaluate") for c in common)])
    return {"seconds": seconds, "n": n, "inception": "given" if inception else "random weights (time only)",
            "lpips": bool(lpips), "command": "python evaluate.py " + " ".join(metrics[:4])}


def _python(script: str, args: list[str]) -> float:
    """Run `python <script> args` from the repository root; its wall time (a failure raises with its output)."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                                                                   os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{script} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return time.perf_counter() - start
