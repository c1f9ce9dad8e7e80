"""The layers of docs/architecture.md hold: no upward import, no cycle (imports inside functions count), no
difflab import inside a function but the commented optional-dependency ones, and a broken layer is caught."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "difflab"


def lint(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the project's contracts on the package under `root`/difflab."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_are_kept():
    pytest.importorskip("importlinter")
    done = lint(REPO / "src")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in done.stdout


@pytest.mark.parametrize("where,line,broken", [
    ("utils/tensors.py", "from difflab.cli import train  # noqa", "Layers point one way"),
    ("data/digits.py", "def f():\n    from difflab.lit import DiffusionModule  # noqa", "Layers point one way"),
    ("samplers/base.py", "def f():\n    from difflab.samplers import generate  # noqa", "No import cycles"),
])
def test_an_upward_import_or_a_cycle_breaks_the_contract(tmp_path, where, line, broken):
    pytest.importorskip("importlinter")
    shutil.copytree(SRC, tmp_path / "difflab", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "difflab" / where
    target.write_text(target.read_text() + "\n\n" + line + "\n")
    done = lint(tmp_path)
    assert done.returncode != 0 and f"{broken}" in done.stdout and "BROKEN" in done.stdout, done.stdout[-2000:]


def function_imports() -> list[tuple[str, int, str]]:
    """(file, line, source line) of every `import difflab...` / `from difflab... import` inside a function."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                names = [sub.module or ""] if isinstance(sub, ast.ImportFrom) else (
                    [a.name for a in sub.names] if isinstance(sub, ast.Import) else [])
                if any(n.startswith("difflab") for n in names):
                    found.append((str(path.relative_to(SRC)), sub.lineno, lines[sub.lineno - 1]))
    return found


def test_difflab_imports_inside_functions_are_only_the_commented_optional_dependency_ones():
    uncommented = [f"{f}:{n}: {line.strip()}" for f, n, line in function_imports() if "#" not in line]
    assert not uncommented, "a difflab import inside a function (move it to the top, or say why it cannot be):\n" + \
        "\n".join(uncommented)
    assert len(function_imports()) <= 2
