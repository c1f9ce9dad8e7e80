"""benchmarks/gpu.py cannot rot: `--smoke` runs every row (training in three precisions, two memory formats and
compiled, FLOPs, sampling beside diffusers' pipeline, compiled sampling, evaluate.py metrics=full) at tiny size on the
CPU, through benchmarks/gpu_run.sh as a GPU machine runs it, and writes its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("diffusers", reason="the benchmark's peer (the dev / bench extra)")


@pytest.mark.slow
def test_smoke_runs_every_row_and_writes_the_table(tmp_path: Path) -> None:
    out, stage = tmp_path / "out", tmp_path / "stage"
    out.mkdir()
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a GPU machine's shell has none set
    env = {**inherited, "OUT": str(out), "STAGE": str(stage), "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ['PATH']}", "TORCH_HOME": str(tmp_path / "torch_home")}
    staged = subprocess.run(["bash", "benchmarks/gpu_run.sh", "--stage"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert staged.returncode == 0 and stage.is_dir(), staged.stderr
    table = tmp_path / "speed.md"
    done = subprocess.run(["bash", "benchmarks/gpu_run.sh", "--smoke", "--out", str(table)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    text = table.read_text()
    for heading in ("## Networks", "## Training images/s", "## Sampling images/s", "## evaluate.py", "## Checks"):
        assert heading in text, text
    assert "## Not run" not in text, text
    for row in ("| cifar10 |", "| ldm |", "| sd |", "| fp16 |", "channels_last", "defaults: difflab channels_last",
                "difflab/compiled", "| yes |"):
        assert row in text, row
    parts = sorted((REPO / ".bench").glob("inception.part-*"))  # from `gpu_run.sh --prepare`, if it ran here
    assert ("Inception weights: given" if len(parts) == 2 else "Inception weights: random weights (time only)") in text
