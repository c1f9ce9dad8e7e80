"""The error contract of the entry points: a user's mistake is one paragraph on stderr and exit status 2,
without a traceback; a bug keeps its traceback; HYDRA_FULL_ERROR=1 shows the traceback of user errors too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from difflab.errors import ConfigError, MissingFileError, UserError, user_message

REPO = Path(__file__).resolve().parents[2]


def run_cli(script: str, *args: str, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"WANDB_MODE": "offline"} | (env or {})
    return subprocess.run([sys.executable, str(REPO / script), *args, f"paths.root_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path, env=full_env, timeout=300)


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_user_error_is_one_paragraph_and_status_2(tmp_path: Path) -> None:
    out = run_cli("sample.py", "ckpt=/no/such/model.ckpt", tmp_path=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "/no/such/model.ckpt" in out.stderr and "`ckpt`" in out.stderr


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_hydra_full_error_shows_the_traceback(tmp_path: Path) -> None:
    out = run_cli("sample.py", "ckpt=/no/such/model.ckpt", tmp_path=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_a_config_that_does_not_compose_exits_2(tmp_path: Path) -> None:
    out = run_cli("train.py", "model=no_such_model", tmp_path=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "no_such_model" in out.stderr


def test_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    code = ("from difflab.utils.entry import run_script\n"
            "def main():\n    raise RuntimeError('an internal bug')\n"
            "run_script(main)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" in out.stderr and "an internal bug" in out.stderr


def test_user_errors_are_found_through_wrapping_exceptions() -> None:
    try:
        try:
            raise ConfigError.bad_value("sampler.steps", "must be >= 1, got 0", "Pass sampler.steps=20.")
        except ConfigError as inner:
            raise RuntimeError("Error in call to target 'SamplerSpec'") from inner
    except RuntimeError as outer:
        message = user_message(outer)
    assert message == "Bad value for config key `sampler.steps`: must be >= 1, got 0. Pass sampler.steps=20."
    assert user_message(RuntimeError("a bug")) is None
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, UserError)


@pytest.mark.parametrize("name", ["DataNotFoundError", "CorruptDataError", "CorruptImageError"])
def test_existing_error_types_are_user_errors(name: str) -> None:
    import difflab.data.files as base

    assert issubclass(getattr(base, name), UserError)
