"""difflab beside diffusers' UNet2DModel recipe and lucidrains' denoising-diffusion-pytorch, on digits 16x16.

Run by hand (not a test); needs the `bench` extra (`pip install -e ".[bench]"`) and the FID Inception weights.

Same for the three stacks: the digits train split (1,617 images, 16x16, [-1, 1]), the batch order (difflab's
seeded GlobalBatchSampler, batch 64, one permutation per epoch), the step count, snapshots of the EMA weights
at the given fractions of the run, the samplers and the FID protocol. Each stack keeps its own recipe:

    difflab     `python train.py` defaults (conf/model/ddpm.yaml, callbacks/default.yaml), via Lightning;
                extra Hydra overrides with --difflab-overrides
    diffusers   train_unconditional recipe: UNet2DModel (DownBlock2D / AttnDownBlock2D at 8x8 / DownBlock2D,
                32-64-64 channels, 1 layer per block; its own layout scaled to 16x16), DDPMScheduler linear
                betas, eps target, AdamW lr 1e-4 betas (0.95, 0.999) wd 1e-6, cosine schedule with 500 warm-up
                steps (scaled to the run length: a quarter of it, as 500 of the default 2,000), EMAModel with
                warm-up (inv_gamma 1, power 3/4, max decay 0.9999), gradient clipping at 1
    lucidrains  Unet(dim=28, dim_mults=(1, 2, 2)) + GaussianDiffusion defaults (pred_v, sigmoid betas, T = 1000),
                its Trainer's optimiser (Adam lr 1e-4, betas (0.9, 0.99)), EMA (beta 0.995 every 10 steps),
                gradient clipping at 1

Sampling: every stack's network is wrapped as a denoiser D(x, sigma) (eps, resp. v parameterisation on its own
beta table) and sampled by the same difflab sampler code from the same per-image noises (seed 1 * 2^20 + i):
DDPM ancestral over all 1000 steps, DDIM-50 (eta 0) and DPM-Solver++ 2M at 20 steps, leading grids. Each stack
keeps its own x0 clipping default: the peers clip x0_hat to [-1, 1] (both do by default); difflab uses its
configured `sampler.clip_denoised`. FID: difflab's torch-fidelity protocol against the whole train split;
broken rate: difflab.metrics.broken (thresholds from the validation split).

    python benchmarks/peers.py --steps 2000 --fractions 0.25 0.5 1 --n-ddpm 64 --n 256 \
        --inception ../shared/assets/inception/inception_fid_trunk.pth --out benchmarks/results/peers.md
    python benchmarks/peers.py --speed 5 --speed-steps 200 --threads 1     # training images/s only, interleaved

The img/s column of the main run times each stack's training once, at different moments of a long run; on a
shared machine `--speed` (the stacks' training steps interleaved, median of the rounds) is the ratio to quote.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.data import DigitsDataModule
from difflab.diffusion import DiscreteVPScheduler
from difflab.diffusion.precond import Denoiser
from difflab.evaluation import MetricSuite, MetricsConfig
from difflab.samplers import SamplerSpec, generate
from difflab.utils.config import conf_dir

CONF = conf_dir()
SAMPLERS = {"ddpm-1000": ("ddpm", None, {}), "ddim-50": ("ddim", 50, {"eta": 0.0}), "dpmpp_2m-20": ("dpmpp_2m", 20, {})}


def batches(dm: DigitsDataModule, steps: int) -> Iterator[Tensor]:
    """The images of the first `steps` training batches, in the order difflab's Lightning run sees them."""
    loader = dm.train_dataloader()
    done, epoch = 0, 0
    while done < steps:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield batch["image"]
            done += 1
            if done == steps:
                return
        epoch += 1


class Snapshots(L.Callback):
    """difflab: the EMA weights (module copies, `modules[step]`) at the given global steps, with `raw` the raw
    weights too (`raw[step]`), and the time spent in training steps."""

    def __init__(self, at: set[int], raw: bool = False) -> None:
        self.at, self.keep_raw, self.modules, self.raw, self.seconds, self._t0 = at, raw, {}, {}, 0.0, 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.seconds += time.perf_counter() - self._t0  # forward, backward, optimizer, EMA (callbacks before this one)
        step = trainer.global_step
        if step in self.at and step not in self.modules:
            if self.keep_raw:
                self.raw[step] = copy.deepcopy(pl_module).eval()
            ema = next(cb for cb in trainer.callbacks if type(cb).__name__ == "EMA")
            with ema.swapped(pl_module):
                self.modules[step] = copy.deepcopy(pl_module).eval()


def train_difflab(dm: DigitsDataModule | None, steps: int, at: set[int], overrides: list[str], *,
                  stop: int | None = None, raw: bool = False, root: str = "/tmp/difflab_peers") -> tuple[Snapshots, Any]:
    """difflab's default recipe (plus `overrides`) with the LR schedule of a `steps`-step run, through Lightning,
    trained to `stop` (default `steps`) on `dm` (default: the config's data module); returns (snapshots, config)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from difflab.utils.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer.max_steps={steps}", f"paths.run_dir={root}", "logger=csv",
                                          *overrides])
    L.seed_everything(0)
    module = instantiate(cfg.model)
    snaps = Snapshots(at, raw)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=stop or steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=cfg.trainer.gradient_clip_val,
                        callbacks=[instantiate(cfg.callbacks.ema), snaps], default_root_dir=root)
    trainer.fit(module, datamodule=dm if dm is not None else instantiate(cfg.data))
    return snaps, cfg


class EpsNet(nn.Module):
    """diffusers' UNet2DModel as a difflab network F(x_in, c_noise) (c_noise = the fractional timestep)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, c_noise: Tensor, cond: Any = None) -> Tensor:
        return self.unet(x, c_noise).sample


class LucidNet(nn.Module):
    """lucidrains' Unet as a difflab network F(x_in, c_noise)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, c_noise: Tensor, cond: Any = None) -> Tensor:
        return self.unet(x, c_noise)


def table_scheduler(alphas_cumprod: Tensor, prediction: str) -> DiscreteVPScheduler:
    """A DiscreteVPScheduler on a given alpha_bar table (lucidrains' sigmoid betas)."""
    sched = DiscreteVPScheduler(prediction=prediction)
    a = alphas_cumprod.double()
    sched.alphas_cumprod, sched.betas = a, 1 - a / torch.cat([a.new_ones(1), a[:-1]])
    sched.sigmas = ((1 - a) / a).sqrt()
    sched.log_sigmas = sched.sigmas.log()
    sched.sigma_min, sched.sigma_max = float(sched.sigmas[0]), float(sched.sigmas[-1])
    sched._device_tables = {}
    return sched


def train_diffusers(dm: DigitsDataModule, steps: int, at: set[int]) -> tuple[dict, float, DiscreteVPScheduler]:
    """The train_unconditional recipe (see the module docstring); returns ({step: EMA net}, seconds, scheduler)."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr = get_scheduler("cosine", optimizer=opt, num_warmup_steps=max(1, steps // 4), num_training_steps=steps)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    snaps, seconds = {}, 0.0
    for step, x0 in enumerate(batches(dm, steps), start=1):
        t0 = time.perf_counter()
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (x0.shape[0],)).long()
        loss = F.mse_loss(unet(noise_scheduler.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step(), lr.step(), opt.zero_grad()
        ema.step(unet.parameters())
        seconds += time.perf_counter() - t0
        if step in at:
            net = copy.deepcopy(unet)
            ema.copy_to(net.parameters())
            snaps[step] = EpsNet(net).eval()
    return snaps, seconds, DiscreteVPScheduler(prediction="eps")


def train_lucidrains(dm: DigitsDataModule, steps: int, at: set[int]) -> tuple[dict, float, DiscreteVPScheduler]:
    """GaussianDiffusion defaults with its Trainer's optimiser and EMA; returns ({step: EMA net}, seconds, scheduler)."""
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    torch.manual_seed(0)
    diffusion = GaussianDiffusion(Unet(dim=28, dim_mults=(1, 2, 2), channels=1), image_size=16, timesteps=1000)
    opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10)
    snaps, seconds = {}, 0.0
    for step, x0 in enumerate(batches(dm, steps), start=1):
        t0 = time.perf_counter()
        loss = diffusion((x0 + 1) / 2)  # it takes [0, 1] images and normalises them itself
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step(), opt.zero_grad()
        ema.update()
        seconds += time.perf_counter() - t0
        if step in at:
            snaps[step] = LucidNet(copy.deepcopy(ema.ema_model.model)).eval()
    return snaps, seconds, table_scheduler(diffusion.alphas_cumprod, "v")


def score(denoise: Callable, scheduler: Any, clip: bool | str, suite: MetricSuite, n: dict[str, int],
          samplers: list[str]) -> dict[str, float]:
    """FID and broken rate of each sampler (same per-image noises for every stack)."""
    out = {}
    for label in samplers:
        name, steps, knobs = SAMPLERS[label]
        spec = SamplerSpec(name, steps, clip_denoised=clip, **knobs)
        count = n["ddpm"] if name == "ddpm" else n["fast"]
        images, _ = generate(denoise, scheduler, spec, n=count, shape=(1, 16, 16), seed=1, batch_size=min(count, 128))
        suite.update(images.clamp(-1, 1), torch.arange(count))
        values = suite.compute()
        suite.reset()
        out[f"{label}/fid"], out[f"{label}/broken_rate"] = values.get("fid", math.nan), values["broken_rate"]
        print(f"  {label}: FID {out[f'{label}/fid']:.1f}, broken {out[f'{label}/broken_rate']:.1%}", flush=True)
    return out


def params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def train_seconds(stack: str, dm: DigitsDataModule, steps: int, overrides: list[str]) -> float:
    """Seconds spent in `steps` training steps of a fresh `stack` model (no snapshots)."""
    if stack == "difflab":
        snaps, _ = train_difflab(dm, steps, set(), overrides)
        return snaps.seconds
    return (train_diffusers if stack == "diffusers" else train_lucidrains)(dm, steps, set())[1]


def speed(args: argparse.Namespace, data: Callable[[], DigitsDataModule]) -> None:
    """Training images/s of the stacks side by side: `--speed` rounds of `--speed-steps` steps each, the stacks
    interleaved (order reversed every other round) so that they share the machine's state; median per stack."""
    import statistics

    rates: dict[str, list[float]] = {s: [] for s in args.stacks}
    for r in range(args.speed):
        for stack in args.stacks if r % 2 == 0 else args.stacks[::-1]:
            rate = args.speed_steps * 64 / train_seconds(stack, data(), args.speed_steps, args.difflab_overrides)
            rates[stack].append(rate)
            print(f"round {r + 1}: {stack} {rate:.1f} training images/s", flush=True)
    base = statistics.median(rates["difflab"]) if "difflab" in rates else None
    lines = ["| stack | median img/s | vs difflab | rounds |", "|---|---:|---:|---|"]
    for stack, values in rates.items():
        med = statistics.median(values)
        lines.append(f"| {stack} | {med:.1f} | {med / base:.2f} | {', '.join(f'{v:.1f}' for v in values)} |"
                     if base else f"| {stack} | {med:.1f} | – | {', '.join(f'{v:.1f}' for v in values)} |")
    note = (f"\n{args.speed} rounds of {args.speed_steps} training steps (batch 64) per stack, interleaved, "
            f"{args.threads or torch.get_num_threads()} thread(s); seconds of the training steps only.\n")
    out = Path(args.out).with_name(Path(args.out).stem + "_speed.md")
    out.write_text("\n".join(lines) + "\n" + note)
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed", type=int, default=0, help="only measure training images/s: this many rounds")
    parser.add_argument("--speed-steps", type=int, default=200, help="training steps per stack and --speed round")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--n", type=int, default=256, help="samples for DDIM-50 and DPM-Solver++ 2M")
    parser.add_argument("--n-ddpm", type=int, default=64, help="samples for 1000-step ancestral sampling")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--stacks", nargs="+", default=["difflab", "diffusers", "lucidrains"])
    parser.add_argument("--difflab-overrides", nargs="*", default=[])
    parser.add_argument("--inception", default="../shared/assets/inception/inception_fid_trunk.pth")
    parser.add_argument("--cache-dir", default="data/metric_stats")
    parser.add_argument("--ref-n", type=int, default=None, help="first n training digits as FID reference (all)")
    parser.add_argument("--no-fid", action="store_true", help="broken rate only (no Inception pass)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/peers.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    at = {max(1, round(f * args.steps)) for f in args.fractions}
    data = lambda: DigitsDataModule(resolution=16, batch_size=64, seed=0)  # noqa: E731  (a fresh one per stack)
    if args.speed:
        return speed(args, data)
    config = MetricsConfig(n_samples=args.n, fid=not args.no_fid, kid=False, inception_score=False, lpips_diversity=False, clip_score=False,
                           reference={"split": "train", "n": args.ref_n}, cache_dir=args.cache_dir, download=False,
                           feature_batch_size=64, weights={"inception": args.inception})
    suite = MetricSuite(config, strict=True)
    suite.prepare_reference(data())
    n = {"ddpm": args.n_ddpm, "fast": args.n}
    results: dict[str, Any] = {"args": vars(args), "stacks": {}}
    for stack in args.stacks:
        print(f"training {stack} for {args.steps} steps", flush=True)
        if stack == "difflab":
            snaps, _ = train_difflab(data(), args.steps, at, args.difflab_overrides)
            modules, seconds = snaps.modules, snaps.seconds
            first = next(iter(modules.values()))
            entry = {"params": params(first.net), "clip": first.sampling_spec().clip_denoised}
            nets = {s: (m.denoiser, m.scheduler) for s, m in modules.items()}
        else:
            trained, seconds, sched = (train_diffusers if stack == "diffusers" else train_lucidrains)(data(), args.steps, at)
            nets = {s: (Denoiser(net, sched).eval(), sched) for s, net in trained.items()}
            entry = {"params": params(next(iter(trained.values()))), "clip": True}
        entry["train_images_per_sec"] = args.steps * 64 / seconds
        print(f"{stack}: {entry['params']} parameters, {entry['train_images_per_sec']:.1f} training images/s", flush=True)
        entry["scores"] = {}
        with torch.no_grad():
            for step in sorted(nets):
                print(f"{stack} at step {step}", flush=True)
                denoiser, sched = nets[step]
                entry["scores"][step] = score(denoiser, sched, entry["clip"], suite, n, args.samplers)
        results["stacks"][stack] = entry
        write(results, args)


def write(results: dict[str, Any], args: argparse.Namespace) -> None:
    """Markdown table (one row per stack and step) and the raw JSON next to it."""
    stacks = results["stacks"]
    base = stacks.get("difflab", {}).get("train_images_per_sec")
    samplers = args.samplers
    head = " | ".join(f"{s} FID / broken" for s in samplers)
    lines = [f"| stack | params | step | {head} | train img/s vs difflab |", "|---|---:|---:|" + "---:|" * (len(samplers) + 1)]
    for stack, e in stacks.items():
        ratio = f"{e['train_images_per_sec'] / base:.2f}" if base else "–"
        for step, v in sorted(e["scores"].items()):
            cells = " | ".join(f"{v[f'{s}/fid']:.1f} / {v[f'{s}/broken_rate']:.1%}" for s in samplers)
            lines.append(f"| {stack} | {e['params']:,} | {step} | {cells} | {ratio} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    note = (f"\nsteps {args.steps}, batch 64, samples: {args.n_ddpm} (DDPM-1000), {args.n} (DDIM-50, DPM-Solver++ 2M); "
            f"FID against {args.ref_n or 1617} training digits; img/s: training steps only, measured in this run.\n")
    out.write_text("\n".join(lines) + "\n" + note)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
