"""SLURM for real: a one-node cluster on localhost runs a submitit sweep, slurm/train.sbatch with 2 DDP tasks,
and a job that SIGUSR1 preempts, which requeues itself and resumes (same run folder, same W&B run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_NET

pytestmark = pytest.mark.slow

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "munged")
JOB = ["debug=fast", "trainer=cpu", "metrics=none", "callbacks.sample_grid.n=2", "sampler.steps=2",
       "data.batch_size=8", *TINY_NET]


def _install_reason() -> str | None:
    """None when the SLURM binaries are there (installing them as root when missing), else why not."""
    if os.geteuid() != 0:
        return "the local test cluster (slurm/local_cluster.sh) runs munged, slurmctld and slurmd as root"
    if all(shutil.which(b) for b in BINARIES):
        return None
    if not shutil.which("apt-get"):
        return f"SLURM is not installed and there is no apt-get to install it: {' '.join(PACKAGES)}"
    cmd = f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {' '.join(PACKAGES)}"
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not all(shutil.which(b) for b in BINARIES):
        return f"could not install {' '.join(PACKAGES)}: {done.stderr[-500:]}"
    return None


def _slurm(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args[:3])}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Starts munged, slurmctld and slurmd (slurm/local_cluster.sh); cancels every job and stops them after."""
    reason = _install_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    script = str(REPO / "slurm" / "local_cluster.sh")
    # jobs start their own W&B service, not the one an earlier test started in this process
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(SLURM_LOCAL_CPUS="4", SLURM_LOCAL_PORT="16817")  # 4 slots: jobs overlap
    try:
        subprocess.run([script, "start", str(root / "cluster")], env=env, check=True, timeout=60,
                       capture_output=True, text=True)
        env.update(SLURM_CONF=str(root / "cluster" / "slurm.conf"), DIFFLAB_ROOT=str(root), WANDB_MODE="offline",
                   OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
                   PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), env.get("PYTHONPATH", "")]))
        yield env
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
        for _ in range(100):  # let the jobs' processes end before their daemons
            if not subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30).stdout.strip():
                break
            time.sleep(0.2)
        subprocess.run([script, "stop", str(root / "cluster")], env=env, timeout=60)


def _state(env: dict[str, str], job: str) -> dict[str, str]:
    text = _slurm(env, "scontrol", "show", "job", job)
    return dict(re.findall(r"(JobState|Restarts|ExitCode)=(\S+)", text))


def _wait(env: dict[str, str], job: str, until: str = "COMPLETED", timeout: float = 240) -> dict[str, str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = _state(env, job)
        if state["JobState"] == until or state["JobState"] in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            return state
        time.sleep(0.5)
    raise TimeoutError(f"job {job} not {until} after {timeout} s: {_state(env, job)}")


def _sbatch(env: dict[str, str], out: Path, *args: str) -> str:
    cmd = ["sbatch", "--parsable", f"--chdir={REPO}", f"--output={out}", "--gpus-per-node=0", "--cpus-per-task=1",
           "--time=10", *args]
    return _slurm(env, *cmd).strip().split(";")[0]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_sweep_through_submitit_and_sbatch_ddp_with_two_tasks(cluster: dict[str, str]) -> None:
    root = Path(cluster["DIFFLAB_ROOT"])
    ddp = _sbatch(cluster, root / "ddp.out", "--nodes=1", "--ntasks-per-node=2", str(REPO / "slurm" / "train.sbatch"),
                  *JOB, "logger=csv", "trainer.max_steps=3", "+callbacks.dump._target_=probes.DumpRankState")
    sweep_dir = root / "my_sweep"
    sweep = [sys.executable, "train.py", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
             "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null",
             "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}", "model=ddpm,ddim", *JOB,
             "logger=[csv,wandb]", "logger.wandb.mode=disabled"]  # W&B's own files: see the preemption test
    done = subprocess.run(sweep, cwd=REPO, env=cluster, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    # the launcher has both results; SLURM may still be COMPLETING a job that returned them
    states = {j: _wait(cluster, j, timeout=60)["JobState"] for j in jobs}
    logs = "\n".join(f"{p}:\n{p.read_text()[-2000:]}" for p in sorted((sweep_dir / ".submitit").rglob("*.err")))
    assert len(jobs) == 2 and set(states.values()) == {"COMPLETED"}, (states, logs)
    for num, model in enumerate(("ddpm", "ddim")):
        run = sweep_dir / str(num)
        assert _load(run / "checkpoints" / "last.ckpt")["global_step"] == 1
        assert "train/loss" in (run / "csv" / "metrics.csv").read_text()
        config = (run / "config.yaml").read_text()
        assert f"group: {sweep_dir.name}\n" in config and f"job_type: {model}\n" in config  # W&B grouping
        assert (run / "wandb_id.txt").is_file()

    state = _wait(cluster, ddp)
    assert state["JobState"] == "COMPLETED", (root / "ddp.out").read_text()[-3000:]
    run = root / "runs" / "train" / f"slurm-{ddp}"
    assert _load(run / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # written once
    assert "train/loss" in (run / "csv" / "metrics.csv").read_text()
    ranks = [_load(run / f"rank{r}.pt") for r in (0, 1)]  # two DDP processes, identical EMA
    assert all(torch.equal(ranks[0]["ema"][k], ranks[1]["ema"][k]) for k in ranks[0]["ema"])


def test_sigusr1_saves_requeues_and_the_job_resumes_with_the_same_wandb_run(cluster: dict[str, str]) -> None:
    root = Path(cluster["DIFFLAB_ROOT"])
    out = root / "preempt.out"
    job = _sbatch(cluster, out, str(REPO / "slurm" / "train.sbatch"), *JOB, "logger=[csv,wandb]",
                  "trainer.max_steps=10", "trainer.val_check_interval=5",
                  "callbacks.checkpoint_last.every_n_train_steps=100",
                  "+callbacks.slow._target_=probes.SlowSteps", "+callbacks.slow.seconds=0.3")
    run = root / "runs" / "train" / f"slurm-{job}"
    end = time.monotonic() + 180
    while not ((run / "progress.txt").is_file() and int((run / "progress.txt").read_text() or 0) >= 2):
        assert time.monotonic() < end and _state(cluster, job)["JobState"] in ("PENDING", "RUNNING"), \
            out.read_text()[-3000:] if out.is_file() else "no output"
        time.sleep(0.3)
    _slurm(cluster, "scancel", "--signal=USR1", job)  # what --signal=SIGUSR1@90 sends before the time limit
    end = time.monotonic() + 120
    while _state(cluster, job).get("Restarts", "0") == "0" or _state(cluster, job)["JobState"] != "RUNNING":
        assert time.monotonic() < end, (_state(cluster, job), out.read_text()[-3000:])
        # a requeued job waits for a begin time about 2 minutes ahead; a test need not
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=cluster, capture_output=True)
        time.sleep(0.5)
    state = _wait(cluster, job)
    log = out.read_text()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", log[-3000:]
    hpc = _load(run / "hpc_ckpt_1.ckpt")
    assert 2 <= hpc["global_step"] < 10  # saved on the signal, mid-run
    # The requeue ends the running step with SIGTERM: when that step finishes before SLURM's kill, its stop checkpoint
    # (checkpoints/last.ckpt, a step later) is newer than hpc_ckpt_1.ckpt and is the one to resume from.
    resumed = re.search(r"resuming from this run folder's checkpoint (\S+)", log)
    assert resumed and "restart 1" in log, log[-3000:]
    first = int(re.search(r"train step (\d+)/10", log[resumed.end():]).group(1))  # the resumed run's first step
    if Path(resumed.group(1)) == run / "hpc_ckpt_1.ckpt":
        assert first == hpc["global_step"] + 1, log[-3000:]
    else:
        assert Path(resumed.group(1)) == run / "checkpoints" / "last.ckpt" and first > hpc["global_step"] + 1, log[-3000:]
        assert "SIGTERM received" in log
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert _load(run / "checkpoints" / "last.ckpt")["global_step"] == 10  # the requeued job continued the steps
    ids = {p.name.rsplit("-", 1)[1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2 and ids == {(run / "wandb_id.txt").read_text().strip()}
