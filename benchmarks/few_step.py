"""Few-step generation on the digits: each distillation recipe trained from the default digits checkpoint for the
teacher's own training budget, scored at 1, 2 and 4 NFE beside the teacher's best solver at 4, 5, 8 and 20 NFE.

Budget. The teacher trained `--teacher-steps` steps (`python train.py`: 2000). One training step of the teacher's own
recipe (its denoising loss on a batch of 64) and one of each distillation recipe on the same batch are timed side by
side, interleaved over `--timing-rounds` rounds (median), so that the ratio holds on a shared machine; each student
gets `--budget` x teacher_steps x t_teacher / t_recipe steps, reflow less the time of its teacher pairs (timed the
same way). The wall-clock budget is matched as a ratio measured in this run, not as seconds on a busy machine. Each
student trains through the ordinary command (printed in the report), the students side by side while the teacher's
rows are scored:
    python train.py model=distill distill.method=<method> distill.teacher=<ckpt> trainer.max_steps=<steps> ...

Scores. FID of `--n` samples against the digits training split (1,617 images) with the shared FID Inception weights
(`--inception`), read through difflab's metrics code as benchmarks/fid_samplers.py does; every cell starts from the
same per-image noises (`--seed`: 1, i); LCM's later steps draw their noise from the same per-image generators. FID of a
few hundred samples is biased upwards: compare cells of one table only. Teacher rows run difflab samplers on the
teacher (EMA weights, x0 clamped) on several grids; the best teacher row at each NFE is the reference of the goals.
Student rows run each student's own sampler on the grid it was trained on (`sampler.grid` of its run, else the
trailing grid) and on each of `--student-grids`, as the teacher gets several grids; the best row at each NFE counts.
A cell whose sigma grid another grid already gives (1 step is sigma_max -> 0 on every grid) is sampled once and shown
in each of its rows; a goal line names every row of its best value.

    python benchmarks/few_step.py <teacher ckpt> --budget 1.0 --n 500
    python benchmarks/few_step.py <ckpt> --methods consistency --budget 0.25 --n 200 --work /tmp/few_step
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fid_samplers import INCEPTION, SEED, fid, reference_stats, run_difflab  # noqa: E402  (FID as fid_samplers does)

from difflab.data import DigitsDataModule  # noqa: E402
from difflab.diffusion.schedules import GRIDS  # noqa: E402
from difflab.diffusion.thresholding import threshold  # noqa: E402
from difflab.lit.checkpoint import load_module  # noqa: E402
from difflab.lit.distill import student_scheduler, student_spec  # noqa: E402
from difflab.lit.distill_methods import make_method  # noqa: E402
from difflab.metrics.inception import InceptionFeatures  # noqa: E402
from difflab.samplers import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEACHER_ROWS = ("unipc@optimized", "unipc@logsnr", "dpmpp_3m@logsnr", "dpmpp_2m@karras", "ddim@trailing")
TEACHER_NFE = (4, 5, 8, 20)
STUDENT_NFE = (1, 2, 4)
FINAL = {"consistency": 4, "progressive": 1, "reflow": 4}  # sampler.steps of each run (progressive: last stage)


def digits_batch(resolution: int, n: int = 64) -> torch.Tensor:
    """The first training batch of the digits, [n, 1, R, R] in [-1, 1]."""
    dm = DigitsDataModule(resolution=resolution, batch_size=n)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))["image"]


def step_costs(teacher: Any, methods: list[str], options: dict[str, dict[str, Any]], rounds: int) -> dict[str, float]:
    """Seconds per training step of the teacher's recipe ("teacher") and of each method, timed interleaved (median
    over rounds of 3 steps each), and reflow's seconds per teacher pair ("reflow_pair")."""
    x0 = digits_batch(teacher.image_shape[-1])
    spec = teacher.sampling_spec()
    teacher_fn = lambda x, s, c=None: threshold(teacher.denoiser(x, s, c), spec.clip_denoised)  # noqa: E731
    sched = student_scheduler(teacher.scheduler)
    runners = {}

    def recipe(loss_of: Any, after: Any = None) -> Any:
        student = copy.deepcopy(teacher.denoiser).train().requires_grad_(True)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
        gen = torch.Generator().manual_seed(0)

        def step() -> None:
            loss = loss_of(student, gen).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after is not None:
                after(student)
        return step

    runners["teacher"] = recipe(lambda s, g: teacher.loss_fn(s, x0, generator=g))
    for name in methods:
        method = make_method(name, {name: {**options.get(name, {}), **({"pairs": 8} if name == "reflow" else {})}})
        method.setup(sched, FINAL[name], 10**6, teacher_fn, teacher.latent_shape)
        runners[name] = recipe(lambda s, g, m=method: m.loss(s, teacher_fn, x0, None, g),
                               lambda s, m=method: m.after_step(s, 1))
    if "reflow" in methods:
        pair_spec = make_method("reflow", {"reflow": options.get("reflow", {})}).spec
        runners["reflow_pair"] = lambda: generate(teacher_fn, sched, pair_spec, n=64, shape=teacher.latent_shape)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for name, run in runners.items():  # warm-up
        run()
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            for _ in range(3):
                run()
            times[name].append((time.perf_counter() - t0) / (3 * (64 if name == "reflow_pair" else 1)))
    return {k: statistics.median(v) for k, v in times.items()}


def student_steps(costs: dict[str, float], method: str, budget_s: float, pairs: int) -> int:
    """Training steps of `method` that fit `budget_s` seconds of the teacher's step cost (reflow: after its pairs)."""
    left = budget_s - (pairs * costs["reflow_pair"] if method == "reflow" else 0.0)
    return max(1, int(left / costs[method]))


def own_args(method: str, extra: list[str]) -> list[str]:
    """The overrides of `--train-args` for `method`: all but another method's `distill.<other>.*` options."""
    others = tuple(f"distill.{m}." for m in FINAL if m != method)
    return [a for a in extra if not a.lstrip("+").startswith(others)]


def train_command(ckpt: Path, method: str, steps: int, run_dir: Path, extra: list[str]) -> list[str]:
    """The train.py command of one student."""
    return ["train.py", "model=distill", f"distill.method={method}", f"distill.teacher={ckpt}",
            f"sampler.steps={FINAL[method]}", f"trainer.max_steps={steps}", "logger=csv", "metrics=none",
            "trainer.enable_progress_bar=false", f"paths.run_dir={run_dir}", f"hydra.run.dir={run_dir}",
            *own_args(method, extra)]


def start_training(ckpt: Path, method: str, steps: int, work: Path, extra: list[str]) -> dict[str, Any]:
    """Start one student's training (the students train side by side, while the teacher is scored)."""
    run_dir = work / method
    command = train_command(ckpt, method, steps, run_dir, extra)
    job: dict[str, Any] = {"run_dir": run_dir, "command": command, "t0": time.perf_counter(), "proc": None}
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        print(f"{method}: reusing {run_dir}", flush=True)
        return job
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "offline"}
    work.mkdir(parents=True, exist_ok=True)
    log = (work / f"{method}.log").open("w")
    job["proc"] = subprocess.Popen([sys.executable, *command], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    job["waiter"] = threading.Thread(target=lambda: job.update(rc=job["proc"].wait(), t1=time.perf_counter()))
    job["waiter"].start()  # the end of each training is timed when it happens, not when it is waited for
    return job


def finish_training(method: str, job: dict[str, Any], work: Path) -> float:
    """Wait for a student's training; its wall seconds (nan when an earlier run was reused)."""
    if job["proc"] is None:
        return float("nan")
    job["waiter"].join()
    if job["rc"] != 0:
        raise RuntimeError(f"{method} training failed: see {work / f'{method}.log'}")
    return job["t1"] - job["t0"]


def trained_steps(run_dir: Path) -> int:
    """trainer.max_steps of a student's run (a reused run keeps the steps it was trained for)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(run_dir / "config.yaml").trainer.max_steps)


def student_cells(method: str, run_dir: Path) -> list[tuple[int, Path]]:
    """(NFE, checkpoint) of a student at 1, 2 and 4 steps (progressive: each stage's own checkpoint)."""
    ckpts = run_dir / "checkpoints"
    if method == "progressive":
        return [(k, ckpts / ("last.ckpt" if k == FINAL[method] else f"steps_{k}.ckpt")) for k in STUDENT_NFE]
    return [(k, ckpts / "last.ckpt") for k in STUDENT_NFE]


def own_grid(ckpt: Path) -> str:
    """The grid a student was trained on and samples with by default (its sampler's, else its scheduler's)."""
    module = load_module(ckpt)
    return str(module.sampling_spec().scheduler_for(module.scheduler).grid)


def score_student(extractor: Any, ref: Any, module: Any, spec: Any, n: int, batch: int, seed: int = SEED) -> float:
    """FID of a student sampled with `spec` (noises (seed, i))."""
    images, calls = module.generate(n, seed=seed, batch_size=batch, sampler=spec)
    assert calls == spec.steps, (spec.name, spec.steps, calls)
    return fid(extractor, images, ref)


def score_students(extractor: Any, ref: Any, method: str, cells: list[tuple[int, Path]], grids: list[str], n: int,
                   batch: int, seed: int = SEED, score: Any = score_student) -> dict[str, dict[str, float]]:
    """FID rows `student <method> (<sampler>@<grid>)` of each grid at each (NFE, checkpoint) cell. A cell whose
    sigma grid another grid already gave (1 step is sigma_max -> 0 on every grid) is sampled once and shown in each."""
    rows: dict[str, dict[str, float]] = {}
    done: dict[tuple[str, tuple[str, ...]], float] = {}
    modules = {ckpt: load_module(ckpt) for ckpt in dict.fromkeys(c for _, c in cells)}  # one per file
    for k, ckpt in cells:
        module = modules[ckpt]
        for grid in grids:
            spec = student_spec(make_method(method), {"steps": k, "grid": grid})
            key = (str(ckpt), tuple(f"{v:.10g}" for v in spec.sigmas(module.scheduler).tolist()))  # to rounding
            label = f"student {method} ({spec.name}@{grid})"
            if key not in done:
                done[key] = score(extractor, ref, module, spec, n, batch, seed)
            rows.setdefault(label, {})[str(k)] = done[key]
            print(f"{label} NFE {k}: FID {done[key]:.2f}", flush=True)
    return rows


def report(result: dict[str, Any]) -> str:
    """Markdown: settings, budgets, the FID table and the two goal lines."""
    args = result["args"]
    title = f"# Few-step generation: distilled students against the teacher's solvers ({args['n']} samples per cell)"
    setting = (f"Teacher: `{args['ckpt']}` (recipe: {args['recipe']}). Command: `{result['command']}` "
               f"({result['seconds']:.0f} s, {os.environ.get('OMP_NUM_THREADS', 'default')} torch threads).")
    seed = args.get("seed", SEED)
    reference = (f"Reference: the digits training split ({result['ref_count']} images); EMA weights; per-image noises "
                 f"(seed {seed}, i) shared by every cell. FID of {args['n']} samples is biased upwards: compare within "
                 "this table only.")
    budget = (f"Teacher: {args['teacher_steps']} training steps; one step {result['costs']['teacher'] * 1e3:.0f} ms "
              f"measured here, so each student's budget is {args['budget']:g} x "
              f"{result['budget_s'] / args['budget']:.0f} s of that step.")
    header = ("| method | teacher calls per example and step | step cost / teacher step | student steps | "
              "share of the teacher's budget | training wall clock (s) | command |")
    lines = [title, "", setting, reference, "", "## Budgets", "", budget, "", header, "|---|---|---|---|---|---|---|"]
    for m, b in result["students"].items():
        calls = b["teacher_calls"] + (f" + {b['pairs']} pairs x {b['pair_nfe']} NFE before" if m == "reflow" else "")
        wall = "– (reused)" if b["wall_s"] != b["wall_s"] else f"{b['wall_s']:.0f}"
        lines.append(f"| {m} | {calls} | {b['cost_ratio']:.2f} | {b['steps']} | {b['share']:.2f} | {wall} | "
                     f"`python {' '.join(b['command'])}` |")
    nfes = sorted({*TEACHER_NFE, *STUDENT_NFE})
    lines += ["", "## FID", "", "| row | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
    for row, cells in result["fid"].items():
        lines.append(f"| {row} | " + " | ".join(f"{cells[str(k)]:.2f}" if str(k) in cells else "–" for k in nfes) + " |")
    lines += ["", "Student cells on the same sigma grid (every grid at 1 step) are one sampling, shown in each row.", "",
              *result["goals"], ""]
    return "\n".join(lines)


def goals(fids: dict[str, dict[str, float]]) -> list[str]:
    """The issue's two goal lines: best student at 4 NFE vs 1.15 x the teacher's best at 20; at 1 NFE vs at 5."""
    def best(kind: str, nfe: int) -> tuple[float, str]:
        """The best value and every row that gives it (rows on the same sigma grid share one cell)."""
        cells = {r: c[str(nfe)] for r, c in fids.items() if r.startswith(kind) and str(nfe) in c}
        low = min(cells.values(), default=float("nan"))
        return low, " = ".join(r for r, v in cells.items() if v == low) or "none"

    out = []
    for mine, theirs, factor in ((4, 20, 1.15), (1, 5, 1.0)):
        s, t = best("student", mine), best("teacher", theirs)
        verdict = "met" if s[0] <= factor * t[0] else "not met"
        out.append(f"Goal (best student at {mine} NFE <= {factor:g} x the teacher's best solver at {theirs} NFE): "
                   f"{verdict}; {s[0]:.2f} ({s[1]}) against {factor:g} x {t[0]:.2f} = {factor * t[0]:.2f} ({t[1]}).")
    return out


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt", type=Path, help="the teacher: the default digits checkpoint (python train.py)")
    p.add_argument("--teacher-steps", type=int, default=2000, help="the teacher's training steps")
    p.add_argument("--budget", type=float, default=1.0, help="each student's budget, as a share of the teacher's")
    p.add_argument("--methods", nargs="+", default=["consistency", "progressive", "reflow"])
    p.add_argument("--train-args", nargs="*", default=[], help="extra train.py overrides for every student")
    p.add_argument("--teacher-rows", nargs="+", default=list(TEACHER_ROWS), help="sampler@grid rows of the teacher")
    p.add_argument("--student-grids", nargs="*", default=["logsnr"],
                   help="grids each student is also scored on, beside the one it was trained on (rows student@grid)")
    p.add_argument("--grid-effort", type=float, default=1.0,
                   help="sampler.grid_effort of optimized teacher rows (fitted once, cached beside the checkpoint)")
    p.add_argument("--n", type=int, default=500, help="samples per cell")
    p.add_argument("--seed", type=int, default=SEED, help="the per-image noises of every cell: (seed, i)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--timing-rounds", type=int, default=5)
    p.add_argument("--ref-n", type=int, default=None, help="reference images (default: the whole training split)")
    p.add_argument("--work", type=Path, default=Path("/tmp/few_step"), help="where the students' runs go")
    p.add_argument("--inception", type=Path, default=INCEPTION)
    p.add_argument("--recipe", default="python train.py (default), 2000 steps")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    if not args.ckpt.is_file() or not args.inception.is_file():
        p.error(f"need an existing checkpoint and Inception weights: {args.ckpt}, {args.inception}")
    unknown = [g for g in args.student_grids if g not in GRIDS or g == "optimized"]
    if unknown:
        p.error(f"--student-grids {' '.join(unknown)}: not a fixed grid of a discrete VP schedule "
                f"({', '.join(g for g in GRIDS if g != 'optimized')})")
    if not 0 < args.grid_effort <= 1000:
        p.error(f"--grid-effort {args.grid_effort:g} is outside (0, 1000] (sampler.grid_effort; 1 is the library's)")
    return args


def main() -> None:
    """Time, train, score, report."""
    args = parse_args()
    t0 = time.perf_counter()
    teacher = load_module(args.ckpt).eval()
    options = {"reflow": {}}
    costs = step_costs(teacher, args.methods, options, args.timing_rounds)
    budget_s = args.budget * args.teacher_steps * costs["teacher"]
    print("step costs (s):", {k: round(v, 4) for k, v in costs.items()}, flush=True)
    students: dict[str, dict[str, Any]] = {}
    jobs = {}
    for method in args.methods:
        given = dict(a.split("=", 1) for a in own_args(method, args.train_args) if a.startswith(f"distill.{method}."))
        recipe = make_method(method)
        pairs = int(given.get("distill.reflow.pairs", getattr(recipe, "pairs", 0)))
        steps = student_steps(costs, method, budget_s, pairs)
        jobs[method] = start_training(args.ckpt, method, steps, args.work, args.train_args)
        if jobs[method]["proc"] is None:  # reused: the steps it was trained for, and the share of the budget they are
            steps = trained_steps(jobs[method]["run_dir"])
            jobs[method]["command"] = train_command(args.ckpt, method, steps, jobs[method]["run_dir"], args.train_args)
        students[method] = {"steps": steps, "cost_ratio": costs[method] / costs["teacher"],
                            "command": jobs[method]["command"], "run_dir": str(jobs[method]["run_dir"]), "pairs": pairs,
                            "pair_nfe": int(given.get("distill.reflow.solver_steps", recipe.spec.steps))
                            if method == "reflow" else 0,
                            "teacher_calls": f"{recipe.teacher_calls:g}" if method != "reflow" else "0",
                            "share": (steps * costs[method] + (pairs * costs["reflow_pair"] if method == "reflow"
                                                               else 0.0)) / (budget_s / args.budget)}
        print(f"{method}: {steps} steps", flush=True)
    torch.set_grad_enabled(False)
    extractor = InceptionFeatures(str(args.inception), download=False).eval()
    ref = reference_stats(extractor, teacher.image_shape[-1], args.ref_n)
    fids: dict[str, dict[str, float]] = {}
    grid_args = argparse.Namespace(grid_effort=args.grid_effort, grid_distance="pixel", inception=args.inception,
                                   batch_size=args.batch_size)
    for row in args.teacher_rows:
        for k in TEACHER_NFE:
            images, calls = run_difflab(teacher, args.ckpt, row, k, args.n, grid_args, args.seed)
            fids.setdefault(f"teacher {row}", {})[str(k)] = fid(extractor, images.clamp(-1, 1), ref)
            print(f"teacher {row} NFE {k} ({calls}): FID {fids[f'teacher {row}'][str(k)]:.2f}", flush=True)
    for method in args.methods:
        students[method]["wall_s"] = finish_training(method, jobs[method], args.work)
        print(f"{method}: trained in {students[method]['wall_s']:.0f} s", flush=True)
    for method, info in students.items():
        cells = [(k, ckpt) for k, ckpt in student_cells(method, Path(info["run_dir"])) if ckpt.is_file()]
        trained_on = own_grid(cells[-1][1])  # (a progressive run too short to reach a stage has no cell there)
        info["grid"] = trained_on
        fids.update(score_students(extractor, ref, method, cells, list(dict.fromkeys([trained_on, *args.student_grids])),
                                   args.n, args.batch_size, args.seed))
    command = (f"python benchmarks/few_step.py <teacher ckpt> --budget {args.budget:g} --n {args.n} --methods "
               f"{' '.join(args.methods)} --teacher-rows {' '.join(args.teacher_rows)} "
               f"--student-grids {' '.join(args.student_grids)} --grid-effort {args.grid_effort:g}"
               + (f" --seed {args.seed}" if args.seed != SEED else "")
               + (f" --train-args {' '.join(args.train_args)}" if args.train_args else ""))
    result = {"args": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}},
              "command": command, "costs": costs, "budget_s": budget_s, "students": students, "fid": fids,
              "goals": goals(fids), "ref_count": int(ref.meta["count"]), "seconds": time.perf_counter() - t0}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "few_step.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / "few_step.md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
