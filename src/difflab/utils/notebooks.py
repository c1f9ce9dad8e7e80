"""Keeping notebooks without outputs in git: `python -m difflab.utils.notebooks strip|check notebooks/*.ipynb`.

`strip` removes every cell's outputs, execution counts and per-run metadata in place (the same JSON layout
that nbformat writes); `check` exits with 1 and names the files that still hold outputs. Plain JSON, so
this needs neither Jupyter nor nbformat.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from difflab.errors import CorruptFileError, MissingFileError

RUN_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")  # cell metadata written by running a notebook


def read(path: str | Path) -> dict[str, Any]:
    """A notebook as a dict; a clear error names a file that is not notebook JSON."""
    if not Path(path).is_file():
        raise MissingFileError(f"Notebook not found: '{path}'. Pass the paths of existing .ipynb files.")
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptFileError.for_file(path, f"not notebook JSON ({err})", "Pass .ipynb notebook files.") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise CorruptFileError.for_file(path, "not a notebook (no `cells` list)", "Pass .ipynb notebook files.")
    return nb


def dirty_cells(nb: dict[str, Any]) -> list[int]:
    """Indices of code cells that hold outputs, an execution count or run metadata."""
    return [
        i for i, cell in enumerate(nb["cells"])
        if cell.get("cell_type") == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None
             or any(k in cell.get("metadata", {}) for k in RUN_METADATA))
    ]


def strip(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook without outputs, execution counts and run metadata (modified in place and returned)."""
    for cell in nb["cells"]:
        for key in RUN_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def write(nb: dict[str, Any], path: str | Path) -> None:
    """Write as nbformat does (sorted keys, one-space indent, UTF-8, final newline)."""
    Path(path).write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """`strip FILES...` rewrites the files that hold outputs; `check FILES...` lists them and returns 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] not in ("strip", "check"):
        print("usage: python -m difflab.utils.notebooks strip|check NOTEBOOK.ipynb...", file=sys.stderr)
        return 2
    command, dirty = args[0], []
    for path in args[1:]:
        nb = read(path)
        cells = dirty_cells(nb)
        if not cells:
            continue
        dirty.append(path)
        if command == "strip":
            write(strip(nb), path)
            print(f"stripped {path} ({len(cells)} cells)")
        else:
            print(f"{path}: outputs or execution counts in cells {cells}; run "
                  f"`python -m difflab.utils.notebooks strip {path}`", file=sys.stderr)
    return 1 if command == "check" and dirty else 0


if __name__ == "__main__":
    from difflab.utils.entry import run_script

    run_script(lambda: sys.exit(main()))
