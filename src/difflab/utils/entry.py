"""The error contract of every entry point: a user's mistake is one paragraph on stderr and exit status 2.

A Hydra entry point (`python train.py`, the console script `difflab-train`, ...) is one line in its front end's
module,

    def main() -> None:
        hydra_main("sample", run, __name__, rewrite_argv)

which composes `<conf_dir()>/sample.yaml` and runs `run(cfg)` under `user_errors()` and `run_script`; a
`python -m difflab...` tool calls `run_script(main)` around its argparse `main`. A `UserError` (or an exception
raised from one) prints its message without a traceback and exits with 2. So does every error of the command line
or the config that Hydra meets (an override that does not parse, a key that does not exist, an unknown option of a
group, a run folder that cannot be created, a key the built class does not take): one paragraph with the fix
(`+key=`, quoting, the options; `difflab.utils.hydra_errors`) instead of Hydra's report. Ctrl-C outside training
exits with 130 and one line. Any other exception is a bug and keeps its traceback. `HYDRA_FULL_ERROR=1` shows the
traceback of user errors too.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import hydra
import hydra._internal.utils as hydra_internal

from difflab.errors import user_message
from difflab.utils.config import conf_dir
from difflab.utils.hydra_errors import command_line_message, config_message

USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
_task_started = False  # set when a Hydra task starts: a Hydra exit before it is a composition error
_resume_hint: str | None = None  # what a task that keeps its work says when it is interrupted (`on_interrupt`)


class Interrupted(BaseException):
    """The process received SIGTERM (a scheduler, `kill`): raised where it runs, so the task stops like at Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def on_interrupt(hint: str | None) -> None:
    """The sentence printed when the running task is interrupted (e.g. the command that continues it)."""
    global _resume_hint
    _resume_hint = hint


def _terminate(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def exit_interrupted(name: str, status: int) -> NoReturn:
    """Say that the task was interrupted (and how to continue it), and exit with 128 + the signal's number."""
    sys.stderr.flush()
    sys.stderr.write(f"Interrupted ({name}).{' ' + _resume_hint if _resume_hint else ''}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def full_error() -> bool:
    """Whether the user asked for full tracebacks (`HYDRA_FULL_ERROR=1`)."""
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def exit_with(message: str) -> NoReturn:
    """Print a user error's paragraph on stderr and exit with status 2."""
    sys.stderr.flush()
    sys.stderr.write(f"Error: {message.strip()}\n")
    sys.stderr.flush()
    raise SystemExit(USER_ERROR_STATUS)


@contextmanager
def user_errors() -> Iterator[None]:
    """Inside a Hydra task: a user's mistake ends the process with its message and status 2; bugs propagate."""
    global _task_started
    _task_started = True
    try:
        yield
    except Exception as exc:
        message = user_message(exc) or config_message(exc)
        if message is None or full_error():
            raise
        exit_with(message)


@contextmanager
def _command_line_errors() -> Iterator[None]:
    """While Hydra runs the app: an error it meets before the task starts (see `command_line_message`) ends the
    process with one paragraph and status 2 instead of Hydra's report; anything else goes to Hydra's own handler."""
    hydra_report = hydra_internal.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as exc:
            message = None if _task_started or full_error() else command_line_message(exc)
            if message is None:
                return hydra_report(lambda exc=exc: _reraise(exc))
            exit_with(message)

    hydra_internal.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_internal.run_and_report = hydra_report


def _reraise(exc: BaseException) -> NoReturn:
    raise exc


def run_script(main: Callable[[], Any], rewrite_argv: Callable[[list[str]], list[str]] | None = None) -> None:
    """Run a root script's `main` (a `@hydra.main` function, or an argparse tool) under the error contract,
    after `rewrite_argv` (e.g. `cli.train.group_aliases`: names Hydra cannot parse) when given."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # SIGTERM ends the task like Ctrl-C: status 143, work kept
    try:
        if rewrite_argv is not None:
            sys.argv = rewrite_argv(sys.argv)
        with _command_line_errors():
            main()
    except KeyboardInterrupt:
        exit_interrupted("Ctrl-C", INTERRUPTED_STATUS)
    except Interrupted as exc:
        exit_interrupted(str(exc), 128 + exc.signum)
    except SystemExit as exc:
        hydra_app = hasattr(main, "__wrapped__")  # @hydra.main wraps the task function
        if exc.code == 1 and hydra_app and not _task_started:
            raise SystemExit(USER_ERROR_STATUS) from None  # Hydra printed why the config does not compose
        raise
    except Exception as exc:  # tools without Hydra, or a user error outside the task
        message = user_message(exc)
        if message is None or full_error():
            raise
        exit_with(message)


def hydra_main(config_name: str, task: Callable[[Any], Any], module: str,
               rewrite_argv: Callable[[list[str]], list[str]] | None = None) -> None:
    """Run `task(cfg)` as the Hydra app of `<conf_dir()>/<config_name>.yaml`, under the error contract, with the
    command line rewritten by `rewrite_argv` first when given (the CLI's `difflab.api.config.rewrite_argv`: web UI
    sampler names, nested groups). `module` (the caller's `__name__`, e.g. `difflab.cli.train`) names the job as a
    root script would (`train.log`); the task's return value goes back to Hydra (a sweeper such as Optuna reads it)."""
    def app(cfg: Any) -> Any:
        with user_errors():
            return task(cfg)

    app.__module__ = module  # Hydra names the job after the task function's module: train, sample, ...
    main = hydra.main(config_path=str(conf_dir()), config_name=config_name, version_base="1.3")(app)
    run_script(main, rewrite_argv)
