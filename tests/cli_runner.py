"""Run the real entry points many times at the cost of one Python start-up (for the bad-input corpus).

`python tests/cli_runner.py` imports torch, Lightning, Hydra and difflab's CLI modules once, then reads one JSON
request per line on stdin: {"argv": ["sample.py", "n=0", ...] or ["-m", "difflab.utils.notebooks", ...],
"cwd": ..., "env": {...}}. For each it forks a child that runs the script (runpy, as `python <script>` or
`python -m <module>` would) with its stdout/stderr going to files, and answers one JSON line
{"rc": exit status, "stdout": ..., "stderr": ...}. The parent never runs torch work, so forking is safe.
A request with "patch": "enospc" runs its child on a simulated full disk: every write of difflab's output writer
(`difflab.utils.files`) fails half-way with ENOSPC; "enospc:<text>" fails only the writes whose file name holds
<text> (e.g. "enospc:.ckpt": the disk fills up when the checkpoint is written). A request may also carry
"interrupt": {"glob": ..., "count": n, "signal": s}: the child gets signal s once n files match the glob (relative
to its cwd), as a user's Ctrl-C or a scheduler's SIGTERM would stop it.

`Client` drives one such process from a test (tests/cli/test_bad_inputs.py, tests/e2e/test_documented_commands.py).
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def preload() -> None:
    """Import what every case needs, so that each child starts warm."""
    import hydra  # noqa: F401
    import lightning  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    import difflab.cli.compare
    import difflab.cli.evaluate
    import difflab.cli.export
    import difflab.cli.predict
    import difflab.cli.sample
    import difflab.cli.train
    import difflab.lit
    import difflab.nets  # noqa: F401


def full_disk(only: str = "") -> None:
    """Make every write of the output writer (whose file name holds `only`) fail half-way with ENOSPC."""
    import errno

    from difflab.utils import files

    fill_normally, open_temp, opened = files._fill, files._open_temp, [""]

    def open_and_note(target):
        opened[0] = str(target)
        return open_temp(target)

    def half_then_full(file, fill) -> None:
        if only not in opened[0]:
            return fill_normally(file, fill)
        file.write(b"the first bytes")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    files._open_temp = open_and_note

    files._fill = half_then_full


def child(argv: list[str], cwd: str, env: dict[str, str], out: int, err: int, patch: str | None = None) -> None:
    """Become the script: redirect fds 1/2, set argv/cwd/env, run it, exit with its status (never returns)."""
    code = 1
    try:
        if patch and patch.split(":")[0] == "enospc":
            full_disk(patch.partition(":")[2])
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.chdir(cwd)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            script = str(REPO / argv[0])
            sys.argv = [script, *argv[1:]]
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - report like the interpreter does
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_one(request: dict, timeout: float) -> dict:
    """Fork, run the request in the child, wait (killing it after `timeout` s), return rc and output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            child(request["argv"], request["cwd"], request.get("env", {}), out.fileno(), err.fileno(), request.get("patch"))
        deadline = time.monotonic() + timeout
        interrupt = request.get("interrupt")
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if interrupt and len(list(Path(request["cwd"]).glob(interrupt["glob"]))) >= interrupt["count"]:
                os.kill(pid, interrupt["signal"])
                interrupt = None
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = -1
                break
            time.sleep(0.02)
        rc = os.waitstatus_to_exitcode(status) if status != -1 else 124
        out.seek(0)
        err.seek(0)
        return {"rc": rc, "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}


def serve() -> None:
    """Answer one JSON request per stdin line with one JSON result line on stdout."""
    preload()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        result = run_one(request, float(request.get("timeout", 120)))
        print(json.dumps(result), flush=True)


class Client:
    """One warm runner process: `client.run(argv, cwd)` runs a command in a forked child and returns its answer."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=cwd, env=env)
        ready = self.proc.stdout.readline()
        if json.loads(ready or "{}") != {"ready": True}:
            raise RuntimeError(f"tests/cli_runner.py did not start (said {ready!r})")

    def run(self, argv: list[str], cwd: Path, timeout: float = 120, **extra: object) -> dict:
        """{"rc", "stdout", "stderr"} of `argv` (["train.py", ...] or ["-m", "module", ...]) run in `cwd`."""
        request = {"argv": list(argv), "cwd": str(cwd), "timeout": timeout, **extra}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


if __name__ == "__main__":
    serve()
