"""The fast lane stays fast: an unmarked test that runs past the limit fails (tests/slow_limit.py), a marked one
passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

TESTS = '''
import time
import pytest


def test_quick():
    pass


def test_unmarked_and_slow():
    time.sleep(1.0)


@pytest.mark.slow
def test_marked_and_slow():
    time.sleep(1.0)
'''


def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DIFFLAB_SLOW_LIMIT": "0.5"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "markers=slow",
                           "-o", "addopts=", str(folder), *args], capture_output=True, text=True, env=env,
                          cwd=folder, timeout=300)


def test_an_unmarked_slow_test_fails_and_a_marked_one_passes(tmp_path: Path) -> None:
    shutil.copy(REPO / "tests" / "slow_limit.py", tmp_path / "conftest.py")  # the plugin alone
    (tmp_path / "test_timing.py").write_text(TESTS)
    done = run(tmp_path)
    assert done.returncode == 1 and "1 failed, 2 passed" in done.stdout, done.stdout[-2000:]
    assert "test_unmarked_and_slow took" in done.stdout and "mark it @pytest.mark.slow" in done.stdout
