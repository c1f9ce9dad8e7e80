"""sample.py and evaluate.py keep their work: images are written batch by batch, and a run cut short at any point
continues with `resume=true` into an identical folder; `sampler.steps=` changes the model's own sampler without
`sampler=`; `-m` may follow the overrides."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_NET

SAMPLE = ["n=40", "batch_size=2", "sampler=ddim", "sampler.steps=8", "seed=5"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import difflab

    root = tmp_path_factory.mktemp("resume")
    return difflab.train(["debug=fast", "logger=csv", "metrics=none", f"paths.root_dir={root}", *TINY_NET],
                         run_dir=root / "run").last_ckpt


EVALUATE = ["n_samples=40", "batch_size=2", "sampler=ddim", "sampler.steps=8", "seed=5", "metrics=fast",
            "metrics.fid=false", "metrics.kid=false", "metrics.inception_score=false", "metrics.lpips_diversity=false",
            "metrics.condition_accuracy=false", "logger=csv"]


def command(ckpt: Path, out: Path, *extra: str, script: str = "sample.py") -> list[str]:
    args = SAMPLE if script == "sample.py" else EVALUATE
    return [sys.executable, str(REPO / script), f"ckpt={ckpt}", *args, f"out_dir={out}",
            f"hydra.run.dir={out.parent / (out.name + '_hydra')}", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO / "src")}


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


LAST_KILL = 34  # of 40 images: room for five kills, each a few images apart, and three batches after the last


def kill_five_times(ckpt: Path, out: Path, script: str, record: str) -> None:
    """Run the command into `out`, killing it (SIGKILL, SIGTERM or Ctrl-C) at 5 random image counts, resuming each
    time with resume=true, until it finishes."""
    rng = random.Random(0 if script == "sample.py" else 1)
    kills = 0
    for attempt in range(12):
        extra = ["resume=true"] if attempt else []
        proc = subprocess.Popen(command(ckpt, out, *extra, script=script), env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        made = len(list((out / "images").glob("*.png")))
        # a kill once this run made images of its own, and never after image 34: three batches are still to come, so
        # the signal finds the command at work (one that lands as the finished process exits is no interruption)
        target = min(made + rng.randint(1, 3), LAST_KILL) if made < LAST_KILL else 40
        while proc.poll() is None and len(list((out / "images").glob("*.png"))) < target:
            time.sleep(0.05)
        sent = None
        if proc.poll() is None and kills < 5 and target <= LAST_KILL:
            sent = rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
            proc.send_signal(sent)
            kills += 1
        err = proc.communicate(timeout=600)[1]
        if proc.returncode == 0:
            break
        assert "Traceback" not in err, err[-3000:]  # SIGTERM and Ctrl-C end with a sentence, not a traceback
        if sent in (signal.SIGTERM, signal.SIGINT):
            assert proc.returncode == 128 + sent and "resume=true" in err, (proc.returncode, err[-2000:])
    assert kills == 5 and (out / record).is_file()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # seven commands, each a Python start-up
def test_five_random_kills_end_like_an_uninterrupted_sample(ckpt: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    done = subprocess.run(command(ckpt, whole), env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    kill_five_times(ckpt, tmp_path / "cut", "sample.py", "samples.json")
    assert files(tmp_path / "cut") == files(whole)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_five_random_kills_end_like_an_uninterrupted_evaluation(ckpt: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    done = subprocess.run(command(ckpt, whole, script="evaluate.py"), env=env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    kill_five_times(ckpt, tmp_path / "cut", "evaluate.py", "metrics.json")
    cut, full = files(tmp_path / "cut"), files(whole)
    records = [json.loads(f.pop("metrics.json")) for f in (cut, full)]
    for f in (cut, full):
        for name in [k for k in f if k.startswith("csv/")]:  # the logger's own files carry times
            f.pop(name)
    assert cut == full  # every image, the grid and the strip
    for record in records:
        record["values"].pop("samples_per_sec")  # a rate of what each run sampled: a timing
        record.pop("run_dir"), record.pop("images")  # where each run wrote
    assert records[0] == records[1]


def test_resume_refuses_another_request_and_a_finished_sample(ckpt: Path, tmp_path: Path) -> None:
    from difflab.cli.resume import REQUEST
    from difflab.cli.sample import run
    from difflab.errors import ConfigError, UnwritableOutputError

    import difflab

    out = tmp_path / "out"
    cfg = lambda *o: difflab.compose([f"ckpt={ckpt}", "n=4", "sampler=ddim", "sampler.steps=2", f"out_dir={out}", *o],
                                     config="sample", run_dir=out)  # noqa: E731
    run(cfg())
    with pytest.raises(ConfigError, match="complete"):
        run(cfg("resume=true"))
    (out / "samples.json").unlink()
    (out / REQUEST).write_text('{"n": 3}')
    with pytest.raises(UnwritableOutputError, match="resume=true"):  # an unfinished sample: the message says how
        run(cfg())
    with pytest.raises(ConfigError, match="asked with other values"):
        run(cfg("resume=true"))


def test_steps_without_a_sampler_change_the_model_own(ckpt: Path, tmp_path: Path) -> None:
    from difflab.cli.sample import run

    import difflab

    out = run(difflab.compose([f"ckpt={ckpt}", "n=2", "sampler.steps=3", f"out_dir={tmp_path}"], config="sample",
                              run_dir=tmp_path))
    assert (out["record"]["sampler"]["name"], out["record"]["sampler"]["steps"], out["nfe"]) == ("ddpm", 3, 3)


def test_multirun_flag_may_follow_the_overrides() -> None:
    from difflab.api.config import rewrite_argv

    argv = rewrite_argv(["evaluate.py", "ckpt=x.ckpt", "-m", "sampler=ddim,heun", "sampler.steps=10,20"])
    assert argv == ["evaluate.py", "-m", "ckpt=x.ckpt", "sampler=ddim,heun", "sampler.steps=10,20"]
