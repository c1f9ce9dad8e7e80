"""Condition inputs that mean nothing for a model stop with one paragraph naming the key, exit status 2 and no
traceback, through the real sample.py / evaluate.py scripts; inputs that do mean something still sample.

Three tiny checkpoints (unconditional, class-conditional, vector-conditional) are trained once for the module.
Each command runs in a process forked from this one (torch, Hydra and difflab already imported), which runs the
script with runpy as `python <script> ...` would, so a case costs a config composition and a checkpoint load,
not an interpreter start.
"""

from __future__ import annotations

import csv
import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_NET, compose_config

TRAIN = ["debug=fast", "logger=csv", "metrics=none", *TINY_NET]
MODELS = {
    "uncond": ["model=ddpm"],
    "class": ["model=cond", "model.net.emb_channels=32"],
    "vector": ["model=cond_vector", "model.net.emb_channels=32", "data=shapes", "data.resolution=8",
               "data.num_samples=64"],
}
VECTOR = "{cx: 0.5, cy: 0.5, size: 0.1, aspect: 1, r: 0.5, g: 0.5, b: 0.5, background: 0.2}"
COLUMNS = ["cx", "cy", "size", "aspect", "r", "g", "b", "background"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from difflab.cli import train

    root = tmp_path_factory.mktemp("condition_inputs")
    tables = {"good": [COLUMNS, [0.3] * 7 + [0.1], [0.7] * 7 + [0.4], [0.5] * 7 + [0.2]],
              "typo": [[*COLUMNS[:-1], "backgrund"], [0.3] * 8], "text": [COLUMNS, [0.3] * 7 + ["dark"]]}
    for name, rows in tables.items():
        (root / f"{name}.csv").write_text("\n".join(",".join(map(str, row)) for row in rows) + "\n")
    return {**{name: train.run(compose_config("train", [*TRAIN, *overrides], root / name))["last_ckpt"]
               for name, overrides in MODELS.items()}, **{f"{name}.csv": root / f"{name}.csv" for name in tables}}


def run_script(script: str, *args: str, cwd: Path, timeout: float = 240) -> tuple[int, str]:
    """(exit status, stderr + stdout) of `python <script> args...` run in a forked child of this process."""
    out = cwd / f"{script}.{time.monotonic_ns()}.log"
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            os.chdir(cwd)
            torch.set_num_threads(1)  # the parent's OpenMP thread pool does not survive a fork
            sys.argv = [str(REPO / script), *args, f"paths.root_dir={cwd}"]
            runpy.run_path(str(REPO / script), run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001  (a bug: its traceback goes to the log like the interpreter's would)
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"{script} {args} did not finish in {timeout} s: {out.read_text()[-2000:]}")
        time.sleep(0.05)
    return os.waitstatus_to_exitcode(done[1]), out.read_text()


SAMPLE_ERRORS = [  # (model, overrides, what the message must name)
    ("class", ["class_label=10"], ["`class_label`", "0..9"]),
    ("class", ["class_label=-1"], ["`class_label`", "0..9"]),
    ("class", ["class_label=42"], ["`class_label`", "0..9"]),
    ("class", ["class_label=three"], ["`class_label`", "'three'"]),
    ("class", ["prompt=a cat"], ["`prompt`", "class-conditional with 10 classes", "class_label="]),
    ("class", [f"cond={VECTOR}"], ["`cond`", "class_label="]),
    ("uncond", ["class_label=3"], ["`class_label`", "unconditional"]),
    ("uncond", ["prompt=a cat"], ["`prompt`", "unconditional"]),
    ("uncond", ["negative_prompt=blurry"], ["`negative_prompt`", "unconditional"]),
    ("uncond", ["guidance_scale=3"], ["`guidance_scale`", "unconditional"]),
    ("vector", [], ["`cond`", "Pass cond='{cx: "]),
    ("vector", ["cond={cx: 0.5, cy: 0.5}"], ["`cond`", "missing ['size'"]),
    ("vector", [VECTOR.replace("cx", "x1").join(["cond=", ""])], ["`cond`", "unknown ['x1']"]),
    ("vector", [VECTOR.replace("0.5", "wide", 1).join(["cond=", ""])], ["`cond.cx`", "'wide'"]),
    ("vector", ["cond=0.5"], ["`cond`", "one raw value per column"]),
    ("vector", ["class_label=1"], ["`class_label`", "vector of values", "cond="]),
    ("vector", ["prompt=a red square"], ["`prompt`", "cond="]),
    ("vector", ["cond_csv={typo}"], ["typo.csv", "`cond_csv`", "['background']", "['backgrund']"]),
    ("vector", ["cond_csv={text}"], ["text.csv", "row 2", "'background'", "'dark'"]),
    ("vector", ["cond_csv=/no/such/conds.csv"], ["/no/such/conds.csv", "`cond_csv`"]),
    ("vector", ["cond_csv={good}", f"cond={VECTOR}"], ["`cond`", "`cond_csv`"]),
    ("class", ["cond_csv={good}"], ["`cond_csv`", "class_label="]),
    ("vector", ["sweep={x9: [0, 1, 5]}"], ["`sweep`", "'x9'", "'cx'"]),
    ("vector", ["sweep={cx: [0.6, 0.4, 5]}"], ["`sweep.cx`", "lo 0.6"]),
    ("vector", ["sweep={cx: [0.4, 0.6, 1]}"], ["`sweep.cx`", "count 1", ">= 2"]),
    ("vector", ["sweep={cx: [0.4, 0.6]}"], ["`sweep.cx`", "[lo, hi, count]"]),
    ("vector", ["sweep={cx: [0.4, wide, 5]}"], ["`sweep.cx`", "'wide'"]),
    ("vector", ["sweep={cx: [0.4, 0.6, 5], cy: [0.4, 0.6, 5]}"], ["`sweep`", "one column"]),
    ("vector", ["sweep={cx: [0.4, 0.6, 5]}", "cond={cx: 0.5}"], ["`cond`", "`sweep`", "cx"]),
    ("vector", ["sweep={cx: [0.4, 0.6, 5]}", "cond={x9: 0.5}"], ["`cond`", "unknown ['x9']"]),
    ("vector", ["sweep={cx: [0.4, 0.6, 5]}", "sweep_seeds=0"], ["`sweep_seeds`"]),
    ("vector", ["sweep={cx: [0.4, 0.6, 5]}", "cond_csv={good}"], ["`cond_csv`"]),
    ("vector", ["sweep={cx: [0.4, 0.6, 5]}", "regressor={vector}"], ["`regressor`", "not a condition regressor"]),
    ("vector", ["regressor=/no/such/regressor.ckpt", f"cond={VECTOR}"], ["/no/such/regressor.ckpt", "`regressor`"]),
    ("class", ["sweep={cx: [0, 1, 3]}"], ["`sweep`", "class_label="]),
    ("class", ["regressor={vector}"], ["`regressor`", "class_label="]),
]


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_condition_inputs_that_mean_nothing_are_clear_errors(ckpts: dict[str, Path], tmp_path: Path) -> None:
    failures = []
    for model, overrides, named in SAMPLE_ERRORS:
        names = {k.removesuffix(".csv"): v for k, v in ckpts.items()}
        args = [o.format(**names) if o.startswith(("cond_csv", "regressor")) else o for o in overrides]
        code, log = run_script("sample.py", f"ckpt={ckpts[model]}", "n=2", *args, cwd=tmp_path)
        if code != 2 or "Traceback" in log or not all(part in log for part in named):
            failures.append(f"{model} {overrides}: exit {code}\n{log[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_evaluate_refuses_condition_inputs_of_another_kind(ckpts: dict[str, Path], tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    for model, args, named in (("class", [f"prompts={prompts}"], ["`prompts`", "class_label="]),
                               ("uncond", ["guidance_scale=2"], ["`guidance_scale`", "unconditional"])):
        code, log = run_script("evaluate.py", f"ckpt={ckpts[model]}", "logger=csv", "metrics=none", "metrics.broken_rate=true", "n_samples=2", *args, cwd=tmp_path)
        assert code == 2 and "Traceback" not in log and all(part in log for part in named), log[-1500:]


def test_inputs_that_mean_something_still_sample_and_are_recorded(ckpts: dict[str, Path], tmp_path: Path) -> None:
    steps = ["sampler=ddim", "sampler.steps=2", "save_images=false"]
    for model, args, expected in (("class", ["class_label=9"], {"condition": "class_label", "class_label": 9}),
                                  ("vector", [f"cond={VECTOR}"], {"condition": "vector"}),
                                  ("uncond", [], {"condition": "none", "guidance_scale": None})):
        out = tmp_path / model
        code, log = run_script("sample.py", f"ckpt={ckpts[model]}", "n=2", *steps, *args, f"out_dir={out}",
                               cwd=tmp_path)
        assert code == 0, log[-2000:]
        record = json.loads((out / "samples.json").read_text())
        assert expected.items() <= record.items(), record
    assert json.loads((tmp_path / "vector" / "samples.json").read_text())["cond"]["background"] == pytest.approx(0.2)

    out = tmp_path / "table"  # cond_csv: one image per row, and conditions.csv maps each file to its vector
    code, log = run_script("sample.py", f"ckpt={ckpts['vector']}", f"cond_csv={ckpts['good.csv']}", *steps[:2],
                           f"out_dir={out}", cwd=tmp_path)
    assert code == 0, log[-2000:]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    with (out / "conditions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == ["images/000000.png", "images/000001.png", "images/000002.png"]
    assert [float(r["background"]) for r in rows] == pytest.approx([0.1, 0.4, 0.2], abs=1e-6)
    assert float(rows[1]["cx"]) == pytest.approx(0.7, abs=1e-6)
    assert json.loads((out / "samples.json").read_text())["n"] == 3
