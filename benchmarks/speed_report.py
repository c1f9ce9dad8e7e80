"""The Markdown table of benchmarks/gpu.py, and the bf16 peaks its model FLOPs utilisation is measured against."""

from __future__ import annotations

import argparse
import datetime
import os
from dataclasses import dataclass, field

import torch

from difflab.lit.inference import channels_last_on
from speed_train import Group

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; first matching name wins.
PEAK_BF16_TFLOPS = [("h200", 989.4), ("h100 pcie", 756.0), ("h100 nvl", 835.0), ("h100", 989.4), ("gh200", 989.4),
                    ("b200", 2250.0), ("a100", 312.0), ("a800", 312.0), ("l40s", 362.1), ("l40", 181.0),
                    ("a10g", 70.0), ("a10", 125.0), ("rtx 4090", 165.2), ("rtx 3090", 71.0), ("l4", 121.0)]


def peak_tflops(name: str, given: float | None) -> float | None:
    """The bf16 peak of the device called `name` (`given` wins); None when unknown (MFU is then not shown)."""
    if given:
        return given
    lower = name.lower()
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in lower), None)


@dataclass
class Report:
    """Everything one run measured, rendered by `markdown`."""

    device: str
    peak: float | None
    command: str
    args: argparse.Namespace
    params: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    flops: dict[str, dict[str, float]] = field(default_factory=dict)
    train: list[Group] = field(default_factory=list)
    sample: list[dict] = field(default_factory=list)
    evaluate: dict | None = None
    checks: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load: tuple[float, ...] = field(default_factory=lambda: os.getloadavg() if hasattr(os, "getloadavg") else ())

    def skip(self, what: str, why: str) -> None:
        """Record a row that did not run."""
        self.skipped.append(f"{what}: {why}")

    def mfu(self, preset: str, side: str, rate: float) -> str:
        """Model FLOPs utilisation of `side` at `rate` images/s against the bf16 peak."""
        if self.peak is None or preset not in self.flops:
            return "n/a"
        return f"{100 * self.flops[preset][side] * rate / (self.peak * 1e12):.1f}%"

    def markdown(self) -> str:
        """The whole report."""
        import diffusers  # the peer being measured

        load = os.getloadavg() if hasattr(os, "getloadavg") else ()
        lines = [f"# Speed: difflab beside diffusers on {self.device}", "",
                 f"`{self.command}`", "",
                 f"{datetime.date.today()}, torch {torch.__version__}, diffusers {diffusers.__version__}; "
                 f"{self.seconds:.0f} s in all; load average {self._load(self.load)} at the start, {self._load(load)} "
                 f"at the end (other processes running beside the benchmark show there).", ""]
        lines += self._networks() + self._training() + self._sampling() + self._evaluate() + self._checks()
        if self.skipped:
            lines += ["## Not run", "", *[f"- {s}" for s in self.skipped], ""]
        return "\n".join(lines)

    @staticmethod
    def _load(load: tuple[float, ...]) -> str:
        return " / ".join(f"{v:.1f}" for v in load) if load else "n/a"

    def _networks(self) -> list[str]:
        lines = ["## Networks", "", "| preset | difflab parameters | diffusers parameters | same function | "
                 "GFLOP / training image (difflab / diffusers) |", "|---|---:|---:|---|---|"]
        for preset, (ours, theirs, same) in self.params.items():
            f = self.flops.get(preset)
            flops = f"{f['difflab'] / 1e9:.2f} / {f['diffusers'] / 1e9:.2f}" if f else "n/a"
            lines.append(f"| {preset} | {ours:,} | {theirs:,} | {'yes (same weights)' if same else 'no (SD-sized peer)'}"
                         f" | {flops} |")
        note = ("FLOPs: one forward + backward by torch.utils.flop_counter (on the CPU it does not count the "
                "attention kernel itself)" + (f"; MFU against a bf16 peak of {self.peak:g} TFLOP/s." if self.peak else "."))
        return lines + ["", note, ""]

    def _training(self) -> list[str]:
        if not self.train:
            return []
        lines = ["## Training images/s", "",
                 "Median of interleaved rounds (forward, MSE, backward, AdamW); ratio = difflab / diffusers.", "",
                 "| preset | batch | precision | compile | memory format | difflab img/s | diffusers img/s | ratio | "
                 "peak GiB difflab / diffusers | MFU difflab / diffusers |", "|---|---:|---|---|---|---:|---:|---:|---|---|"]
        for g in self.train:
            for label, ours, theirs in self._pairs(g):
                a, b = g.contestants[ours], g.contestants[theirs]
                peak = f"{a.peak_gib:.2f} / {b.peak_gib:.2f}" if a.peak_gib is not None else "n/a"
                lines.append(f"| {g.preset} | {g.batch} | {g.precision} | {'yes' if g.compile else 'no'} | {label} | "
                             f"{a.rate:.3g} | {b.rate:.3g} | {a.rate / b.rate:.2f} | {peak} | "
                             f"{self.mfu(g.preset, 'difflab', a.rate)} / {self.mfu(g.preset, 'diffusers', b.rate)} |")
        return lines + [""]

    def _pairs(self, g: Group) -> list[tuple[str, str, str]]:
        """(row label, difflab key, diffusers key): one row per shared format, a row of each side's own format
        when they differ, and on the CPU the defaults (difflab's `channels_last=auto`, diffusers' NCHW)."""
        fmts = {side: [c.fmt for c in g.contestants.values() if c.side == side] for side in ("difflab", "diffusers")}
        shared = [f for f in fmts["difflab"] if f in fmts["diffusers"]]
        rows = [(f, f"difflab/{f}", f"diffusers/{f}") for f in shared]
        if not shared:
            d, t = fmts["difflab"][0], fmts["diffusers"][0]
            rows.append((f"difflab {d}, diffusers {t}", f"difflab/{d}", f"diffusers/{t}"))
        auto = "channels_last" if channels_last_on("auto", self.args.device) else "nchw"
        if len(shared) > 1 and auto != "nchw":
            rows.append((f"defaults: difflab {auto} (auto), diffusers nchw", f"difflab/{auto}", "diffusers/nchw"))
        return rows

    def _sampling(self) -> list[str]:
        if not self.sample:
            return []
        lines = ["## Sampling images/s (20 steps of DPM-Solver++(2M), same network)", "",
                 "difflab: `generate` at its defaults (`model.channels_last=auto`), bf16 as sample.py's precision=bf16 "
                 "runs it; diffusers: DDPMPipeline + DPMSolverMultistepScheduler, `.to(bfloat16)` for bf16. "
                 "Median of interleaved rounds of whole runs (host images out).", "",
                 "| batch | precision | contestant | img/s | vs diffusers |", "|---:|---|---|---:|---:|"]
        for row in self.sample:
            base = row["rates"]["diffusers"]
            for name, rate in row["rates"].items():
                lines.append(f"| {row['batch']} | {row['precision']} | {name} | {rate:.3g} | {rate / base:.2f} |")
        return lines + [""]

    def _evaluate(self) -> list[str]:
        if not self.evaluate:
            return []
        e = self.evaluate
        return ["## evaluate.py", "", f"`{e['command']}` on the CIFAR-10 preset ({e['n']:,} samples; Inception "
                f"weights: {e['inception']}; LPIPS diversity {'on' if e['lpips'] else 'off'}; reference statistics of "
                f"the training split computed in the run): **{e['seconds']:.1f} s** from start to exit.", ""]

    def _checks(self) -> list[str]:
        if not self.checks:
            return []
        return ["## Checks", "", *[f"- {k}: {v}" for k, v in self.checks.items()], ""]
