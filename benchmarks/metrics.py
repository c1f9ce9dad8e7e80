"""Cost of difflab's metrics: FID-pipeline throughput against torch-fidelity, and the in-training pass.

Part 1 (`--part fidelity`): the same real images scored by difflab (`MetricSuite`: reference
statistics + generated features + FID/KID/IS) and by `torch_fidelity.calculate_metrics` on
the same uint8 images, interleaved trials; reports images/s through Inception and the ratio.

Part 2 (`--part training`): the default `python train.py` configuration (digits 16x16, the default
UNet, DDPM sampling with 1000 steps, `metrics=fast`): seconds per training step measured over
`--train-steps` steps, extrapolated to the configured `trainer.max_steps`, against the time of
one metric pass (sampling `metrics.n_samples` images + scoring), with the reference statistics
cold (computed) and warm (cached).

    python benchmarks/metrics.py --inception <weights> --alexnet <weights> [--part fidelity|training|all]

Weights default to ../shared/assets; results go to benchmarks/results/metrics.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inception", default=str(ASSETS / "inception" / "inception_fid_trunk.pth"))
    p.add_argument("--alexnet", default=str(ASSETS / "lpips" / "alexnet_features_only.pth"))
    p.add_argument("--part", default="all", choices=["fidelity", "training", "all"])
    p.add_argument("--images", type=int, default=100, help="images per side in part 1")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "metrics.md"))
    return p.parse_args()


def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from difflab.data import DigitsDataModule

    dm = DigitsDataModule(resolution=32)
    train = torch.cat([x for x, _ in dm.iter_images("train", 0, n, 100)])
    val = torch.cat([x for x, _ in dm.iter_images("val", 0, min(n, len(dm.split_dataset("val"))), 100)])
    return train, val


def fidelity_part(args: argparse.Namespace) -> list[str]:
    import torch_fidelity

    from difflab.evaluation import MetricSuite, MetricsConfig
    from difflab.metrics import to_uint8_rgb
    from difflab.metrics.fidelity import ReferenceStats

    real, fake = _digits(args.images)
    n_total = len(real) + len(fake)

    class UInt8(torch.utils.data.Dataset):
        def __init__(self, x: torch.Tensor) -> None:
            self.x = to_uint8_rgb(x)

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.x[i]

    config = MetricsConfig(lpips_diversity=False, clip_score=False, kid_subset_size=50, isc_splits=2,
                           feature_batch_size=50, weights={"inception": args.inception})
    suite = MetricSuite(config, strict=True)

    def ours() -> dict[str, float]:
        suite.reset()
        store = suite.features
        store.update(real, torch.arange(len(real)))
        ref_features, _ = store.compute()
        suite.reference = ReferenceStats.from_features(ref_features, {})
        store.reset()
        suite.update(fake, torch.arange(len(fake)))
        return suite.compute()

    def theirs() -> dict[str, float]:
        return torch_fidelity.calculate_metrics(
            input1=UInt8(fake), input2=UInt8(real), fid=True, kid=True, isc=True, kid_subset_size=50, isc_splits=2,
            feature_extractor_weights_path=args.inception, cuda=False, cache=False, verbose=False, batch_size=50)

    times: dict[str, list[float]] = {"difflab": [], "torch-fidelity": []}
    values = {}
    ours(), theirs()  # warm-up
    for _ in range(args.trials):
        for name, fn in (("difflab", ours), ("torch-fidelity", theirs)):
            t0 = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - t0)
    ips = {k: n_total / statistics.median(v) for k, v in times.items()}
    fid_d, fid_t = values["difflab"]["fid"], values["torch-fidelity"]["frechet_inception_distance"]
    return [
        f"## FID pipeline throughput ({len(real)} reference + {len(fake)} generated digits 32x32, CPU, "
        f"{torch.get_num_threads()} threads, median of {args.trials} interleaved trials)",
        "",
        "| pipeline | images/s | FID |",
        "|---|---|---|",
        f"| difflab MetricSuite (FID + KID + IS) | {ips['difflab']:.2f} | {fid_d:.4f} |",
        f"| torch_fidelity.calculate_metrics (FID + KID + IS) | {ips['torch-fidelity']:.2f} | {fid_t:.4f} |",
        "",
        f"Ratio difflab / torch-fidelity: **{ips['difflab'] / ips['torch-fidelity']:.3f}**.",
        "",
    ]


def training_part(args: argparse.Namespace) -> list[str]:
    import lightning as L
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import difflab.cli  # noqa: F401  (resolvers)
    from difflab.utils.config import conf_dir
    from difflab.callbacks import SampleMetrics, TrainThroughput

    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp}", f"paths.run_dir={tmp}/run",
                                          f"metrics.weights.inception={args.inception}",
                                          f"metrics.weights.lpips_alexnet={args.alexnet}"])
        max_steps = int(cfg.trainer.max_steps)
        L.seed_everything(0)
        module, dm = instantiate(cfg.model), instantiate(cfg.data)
        throughput = TrainThroughput(log_every_n_steps=10**9)
        trainer = L.Trainer(accelerator="cpu", max_steps=args.train_steps, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, default_root_dir=f"{tmp}/run", callbacks=[throughput])
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        step_time = (time.perf_counter() - t0) / args.train_steps
        metrics = SampleMetrics(instantiate(cfg.metrics, _convert_="all"))
        passes = []
        for label in ("cold reference cache", "warm reference cache"):
            t0 = time.perf_counter()
            values = metrics.evaluate(trainer, module, "bench")
            passes.append((label, time.perf_counter() - t0, values))
    train_total = step_time * max_steps
    lines = [
        f"## In-training metric pass at the default settings (`python train.py`: digits 16x16, DDPM 1000 steps, "
        f"metrics=fast: {cfg.metrics.n_samples} samples, reference {cfg.metrics.reference.n} train images)",
        "",
        f"Training: {step_time * 1000:.0f} ms per step over {args.train_steps} steps (batch {cfg.data.batch_size}, "
        f"including data loading) -> {train_total / 60:.1f} min for trainer.max_steps={max_steps}.",
        "",
        "| metric pass | seconds | fraction of training time | samples/s (sampling) | FID (fast) |",
        "|---|---|---|---|---|",
    ]
    for label, seconds, values in passes:
        lines.append(f"| {label} | {seconds:.1f} | {seconds / train_total:.1%} | "
                     f"{values['perf/samples_per_sec']:.2f} | {values.get('val/fid', float('nan')):.1f} |")
    lines.append("")
    return lines


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    lines = ["# Metric cost benchmark", "", f"`python benchmarks/metrics.py --part {args.part}`", ""]
    if args.part in ("fidelity", "all"):
        lines += fidelity_part(args)
    if args.part in ("training", "all"):
        lines += training_part(args)
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
