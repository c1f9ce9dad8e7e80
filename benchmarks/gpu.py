"""Speed where users train: difflab beside diffusers at equal networks, on one GPU (or the CPU), in one command.

    python benchmarks/gpu.py --inception inception_fid_trunk.pth      # one GPU: under 8 minutes on an H100
    python benchmarks/gpu.py --device cpu                              # the CPU comparison (benchmarks/results/)
    python benchmarks/gpu.py --smoke                                   # every row, tiny, on the CPU, in a minute

Rows (networks: `speed_nets.py`; training: `speed_train.py`; sampling and evaluate.py: `speed_sample.py`):
- training images/s and peak memory of difflab's UNet and diffusers' at the same size, in fp32, bf16 autocast and
  fp16 with a gradient scaler, NCHW and channels_last, eager and `torch.compile` (each side compiled in its faster
  eager format), at three sizes: the CIFAR-10 preset, the LDM preset on 32x32x4 latents, an SD-1.5-sized UNet;
  model FLOPs utilisation = FLOPs per image (torch's flop counter) x images/s / the device's bf16 peak;
- sampling images/s of 20 DPM-Solver++(2M) steps at batch 1 and 64: difflab's `generate` against diffusers'
  DDPMPipeline on the same network, and difflab with `model.compile_sampling=true` (CUDA graphs on a GPU);
- the wall time of `evaluate.py metrics=full n_samples=10000` with a 20-step sampler on the CIFAR-10 preset;
- checks: which attention kernels run, how many host synchronisations a sampler step makes, the default precision.

Rows run in priority order; on a GPU a row that would not fit in `--budget` seconds is listed as skipped. The table
is printed and written to benchmarks/results/speed_<device>.md (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_nets import Pair, build, parameters  # noqa: E402
from speed_report import Report, peak_tflops  # noqa: E402
from speed_sample import evaluate_row, sampling_rows  # noqa: E402
from speed_train import flops_per_image, run_group  # noqa: E402

from difflab.utils.config import auto_precision  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GPU_BATCH = {"cifar10": 128, "ldm": 256, "sd": 16}
COST = {"eager": 25, "eager_sd": 45, "compile": 100, "compile_sd": 200, "sampling": 60, "evaluate": 150}  # s, H100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; defaults depend on the device and --smoke."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="every row at tiny size on the CPU (a test runs it)")
    p.add_argument("--sizes", default=None, help="comma-separated presets (default: cifar10,ldm,sd; CPU: cifar10)")
    p.add_argument("--inception", default=None, help="the FID Inception weights (inception_fid_trunk.pth); "
                   "without it the evaluate.py row runs on random weights of the same network (time only)")
    p.add_argument("--lpips", default=None, help="LPIPS AlexNet weights for metrics=full's LPIPS diversity "
                   "(without: metrics.lpips_diversity=false)")
    p.add_argument("--budget", type=float, default=None, help="seconds for all rows (default: 420 on CUDA)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default: 3 CUDA, 5 CPU)")
    p.add_argument("--cpu-batch", type=int, default=8, help="training batch on the CPU")
    p.add_argument("--skip", default="", help="comma-separated row kinds to leave out: train,compile,sample,evaluate")
    p.add_argument("--sample-precisions", default=None, help="comma-separated (default: fp32,bf16; CPU: fp32)")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak of the device (default: looked up)")
    p.add_argument("--out", default=None, help="the Markdown file (default: benchmarks/results/speed_<device>.md)")
    args = p.parse_args(argv)
    if args.smoke:
        args.device = "cpu"
    cuda = torch.device(args.device).type == "cuda"
    args.sizes = (args.sizes or ("cifar10,ldm,sd" if cuda or args.smoke else "cifar10")).split(",")
    args.budget = args.budget or (420.0 if cuda else float("inf"))
    args.rounds = args.rounds or (1 if args.smoke else 3 if cuda else 5)
    args.skip = set(filter(None, args.skip.split(",")))
    precisions = "fp32" if not cuda and not args.smoke else "fp32,bf16"  # bf16 sampling on 2 cores: an hour more
    args.sample_precisions = (args.sample_precisions or precisions).split(",")
    return args


def device_name(device: torch.device) -> str:
    """The accelerator's name, or the CPU's with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu} ({torch.get_num_threads()} threads)"


class Budget:
    """Seconds left for the rows; `fits(cost)` says whether a row of about `cost` seconds still fits."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def fits(self, cost: float) -> bool:
        return self.left() >= cost

    def say(self, what: str) -> None:
        """Progress on stderr: seconds so far and what starts now."""
        print(f"[{time.perf_counter() - self.start:6.0f} s] {what}", file=sys.stderr, flush=True)


def training_plan(args: argparse.Namespace, cuda: bool) -> list[tuple[str, str, bool, list[str] | None, int]]:
    """(preset, precision, compile, formats, cost) in priority order; formats None = each side's best from bf16."""
    plan = []
    if cuda:
        for precision in ("fp32", "bf16", "fp16"):
            plan += [(s, precision, False, ["nchw"], COST["eager_sd" if s == "sd" else "eager"]) for s in args.sizes]
        plan += [(s, "bf16", False, ["channels_last"], COST["eager_sd" if s == "sd" else "eager"]) for s in args.sizes]
    else:
        for precision in ("fp32", "bf16") if not args.smoke else ("fp32", "bf16", "fp16"):
            plan += [(s, precision, False, ["nchw", "channels_last"], 0) for s in args.sizes if s != "sd" or args.smoke]
    if "compile" not in args.skip and (cuda or args.smoke):
        plan += [(s, "bf16", True, None, COST["compile_sd" if s == "sd" else "compile"]) for s in args.sizes]
    return plan


def compile_formats(report: Report, preset: str) -> dict[str, list[str]]:
    """Each side's fastest memory format in the eager bf16 groups of `preset` (NCHW when none ran)."""
    out = {}
    for side in ("difflab", "diffusers"):
        rates = {c.fmt: c.rate for g in report.train if g.preset == preset and g.precision == "bf16" and not g.compile
                 for c in g.contestants.values() if c.side == side}
        out[side] = [max(rates, key=rates.get) if rates else "nchw"]
    return out


def run_training(args: argparse.Namespace, pairs: dict[str, Pair], device: torch.device, report: Report,
                 budget: Budget) -> None:
    """The training groups of `training_plan`, with FLOPs per image counted once per network."""
    cuda = device.type == "cuda"
    for preset, precision, compile, formats, cost in training_plan(args, cuda):
        label = f"training {preset} {precision}{' compiled' if compile else ''}"
        if not budget.fits(cost):
            report.skip(label, "time budget")
            continue
        budget.say(label)
        pair = pairs[preset]
        if preset not in report.flops:
            inputs = pair.inputs(2, device)
            report.flops[preset] = {"difflab": flops_per_image(pair.ours, pair.ours_fwd, inputs),
                                    "diffusers": flops_per_image(pair.theirs, pair.theirs_fwd, inputs)}
        batch = 2 if args.smoke else GPU_BATCH[preset] if cuda else args.cpu_batch
        steps, warmup = (1, 1) if args.smoke or not cuda else (10 if preset == "sd" else 20, 3)
        try:
            group = run_group(pair, precision, compile, formats or compile_formats(report, preset), batch, steps,
                              args.rounds, warmup, device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            report.skip(label, "out of GPU memory")
            continue
        report.train.append(group)


def checks(pairs: dict[str, Pair], device: torch.device, report: Report) -> None:
    """Which attention kernels run the UNet's attention, host syncs per sampler step, the default precision."""
    report.checks["trainer.precision default (auto)"] = auto_precision()
    report.checks.update(attention_kernels(pairs["cifar10"], device))
    if device.type == "cuda" and pairs["cifar10"].module is not None:
        report.checks["host synchronisations per sampler step (DPM++ 2M, bf16, batch 4)"] = syncs_per_step(
            pairs["cifar10"], device)


def attention_kernels(pair: Pair, device: torch.device) -> dict[str, str]:
    """Whether the UNet's attention runs on flash (bf16/fp16) and memory-efficient (fp32) SDPA kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if device.type != "cuda":
        return {"attention": "F.scaled_dot_product_attention (CPU: flash-attention-for-CPU kernel)"}
    net = pair.ours.to(device).eval()
    x, c_noise = pair.inputs(4, device)[:2]
    out = {}
    for label, backend, dtype in (("flash (bf16)", SDPBackend.FLASH_ATTENTION, torch.bfloat16),
                                  ("memory-efficient (fp32)", SDPBackend.EFFICIENT_ATTENTION, None)):
        try:
            autocast = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with torch.no_grad(), sdpa_kernel([backend]), autocast:
                net(x, c_noise)
            out[f"attention kernel {label}"] = "runs"
        except RuntimeError as e:
            out[f"attention kernel {label}"] = f"refused: {str(e).splitlines()[0][:80]}"
    net.train()
    return out


def syncs_per_step(pair: Pair, device: torch.device) -> str:
    """Synchronising CUDA calls of a 20-step minus a 10-step run, per step (torch.cuda.set_sync_debug_mode)."""
    from difflab.samplers import SamplerSpec

    module = pair.module.to(device).eval()

    def count(steps: int) -> int:
        with warnings.catch_warnings(record=True) as caught, torch.autocast("cuda", dtype=torch.bfloat16):
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                module.generate(4, seed=0, sampler=SamplerSpec("dpmpp_2m", steps=steps))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    count(10)  # warm-up: tables copied to the device once
    n10, n20 = count(10), count(20)
    return f"{(n20 - n10) / 10:g} ({n10} in a 10-step run, {n20} in a 20-step run: the rest are per batch)"


def main(argv: list[str] | None = None) -> Path:
    """Run every row that fits, print the table, write it; returns the file."""
    args = parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    if cuda:
        torch.backends.cudnn.benchmark = True
    for name in ("cache_size_limit", "recompile_limit"):  # one compiled graph per preset, format and dtype
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    if args.smoke:  # the compile rows trace through dynamo without generating kernels: seconds, not minutes
        torch.compile = partial(torch.compile, backend="eager")
        torch.set_num_threads(1)  # tiny ops: one thread never waits for a busy second core
        os.environ["OMP_NUM_THREADS"] = "1"  # the same for train.py and evaluate.py of the evaluate row
    budget = Budget(args.budget)
    name = device_name(device)
    report = Report(name, peak_tflops(name, args.peak_tflops), " ".join(sys.argv), args)
    pairs = {s: build(s, args.smoke, device) for s in sorted(set(args.sizes) | {"cifar10"})}
    for pair in pairs.values():
        report.params[pair.name] = (parameters(pair.ours), parameters(pair.theirs), pair.same)
    out = Path(args.out) if args.out else RESULTS / f"speed_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> str:  # after every section: a run cut short keeps what it measured
        report.seconds = time.perf_counter() - budget.start
        out.write_text(text := report.markdown())
        return text

    budget.say("checks")
    checks(pairs, device, report)
    if "train" not in args.skip:
        run_training(args, pairs, device, report, budget)
        save()
    if "sample" not in args.skip:
        if budget.fits(COST["sampling"]):
            budget.say("sampling")
            report.sample = sampling_rows(pairs["cifar10"], [1, 4] if args.smoke else [1, 64],
                                          args.sample_precisions, args.rounds, device, both_formats=not cuda,
                                          compiled=cuda or args.smoke)
        else:
            report.skip("sampling", "time budget")
        save()
    if "evaluate" not in args.skip:
        if budget.fits(COST["evaluate"]) and (cuda or args.smoke):
            budget.say("evaluate.py")
            with tempfile.TemporaryDirectory() as work:
                report.evaluate = evaluate_row(Path(work), args.inception, args.lpips, args.smoke, device)
        else:
            report.skip("evaluate.py metrics=full n_samples=10000", "time budget" if cuda or args.smoke else
                        "CPU: 10,000 samples x 20 steps take hours here")
    text = save()
    print(text, flush=True)
    return out


if __name__ == "__main__":
    main()
