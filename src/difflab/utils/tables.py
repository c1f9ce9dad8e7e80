"""CSV tables as given by users (a data set's `filepath, x1, ..., xD`, `cond_csv=`): rows read strictly.

Every table is read by `read_rows`: a header with a name used twice, or a row with more or fewer values than the
header has names, is an error naming the file, the row and the config key, never a column silently used twice
or a value silently dropped. `value_columns` is what `data.columns=null` means: the columns of the header, other
than the path column, whose first row holds numbers; the `${csv_width:...}` resolver (`utils/config.py`) and the
CSV data module both use it, so the width of a model's condition follows the file.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

from difflab.errors import CorruptFileError, MissingFileError

HOW_TO_GET = ("Point data.csv at a CSV file whose header holds the image path column (data.path_column) and the "
              "value columns (data.columns), e.g. `filepath,x1,...,x8`.")


def read_rows(path: str | Path, key: str = "data.csv") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, values)]) of a CSV file (blank lines skipped, cells stripped); errors name the
    file, the row and `key`: a missing file, an empty header, a duplicate column name, a row of the wrong length."""
    path = Path(path).expanduser()
    if not path.is_file():
        how = HOW_TO_GET if key == "data.csv" else f"`{key}` must name a CSV file."
        raise MissingFileError.for_path(path, key, how, "CSV file")
    with path.open(newline="", encoding="utf-8-sig") as f:
        lines = [(i, [cell.strip() for cell in row]) for i, row in enumerate(csv.reader(f), start=1) if row]
    if not lines:
        raise CorruptFileError.for_file(path, f"the file is empty (no header), config key `{key}`",
                                        "Write a header line naming the columns, then one row per line.")
    header = lines[0][1]
    twice = sorted(name for name, count in Counter(header).items() if count > 1)
    if twice:
        raise CorruptFileError.for_file(path, f"the header names the column(s) {twice} more than once (config key "
                                        f"`{key}`), so it is unclear which one holds the values",
                                        "Give every column its own name.")
    rows = lines[1:]
    for line, values in rows:
        if len(values) != len(header):
            raise CorruptFileError.for_file(path, f"row {line} holds {len(values)} values for the {len(header)} "
                                            f"columns of the header {header} (config key `{key}`)",
                                            "Give every row one value per column (quote a value that holds a comma).")
    return header, rows


def is_number(text: str) -> bool:
    """Whether a cell parses as a (finite) number."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def numeric_columns(header: list[str], rows: list[tuple[int, list[str]]],
                    path_column: str | None) -> tuple[list[str], list[str]]:
    """(value columns, left out) of a table read with `data.columns=null`: the columns besides `path_column` whose
    first row holds a number, and those whose first row does not."""
    first = rows[0][1] if rows else []
    others = [h for h in header if h != path_column]
    numeric = [h for h in others if first and is_number(first[header.index(h)])]
    return numeric, [h for h in others if h not in numeric]


def value_columns(path: str | Path, path_column: str | None, key: str = "data.csv") -> list[str]:
    """The value columns of the CSV file `path` under `data.columns=null` (`numeric_columns`)."""
    return numeric_columns(*read_rows(path, key), path_column)[0]
