"""CSV tables read strictly (no value dropped, no column used twice) and `data.columns=null` inferred from the header."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from difflab.errors import ConfigError, CorruptFileError, MissingFileError, user_error_in
from difflab.utils.config import register_resolvers
from difflab.utils.tables import read_rows, value_columns


def _table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


def test_rows_are_read_with_their_line_numbers_and_blank_lines_skipped(tmp_path: Path) -> None:
    header, rows = read_rows(_table(tmp_path, "filepath, a ,b\nx.png,1,2\n\ny.png, 3 ,4\n"))
    assert header == ["filepath", "a", "b"] and rows == [(2, ["x.png", "1", "2"]), (4, ["y.png", "3", "4"])]


@pytest.mark.parametrize("text,words", [
    ("cx,cx\n1,2\n", r"names the column\(s\) \['cx'\] more than once \(config key `cond_csv`\)"),
    ("filepath,a,a\nx.png,1,2\n", r"names the column\(s\) \['a'\] more than once"),
    ("a,b\n1,2\n1,2,3,4,5,6,7,8,9,10\n", r"row 3 holds 10 values for the 2 columns of the header \['a', 'b'\]"),
    ("a,b\n1\n", r"row 2 holds 1 values for the 2 columns"),
    ("", "the file is empty"),
])
def test_a_row_of_the_wrong_length_or_a_duplicate_column_is_an_error(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(CorruptFileError, match=words):
        read_rows(_table(tmp_path, text), key="cond_csv")


def test_value_columns_are_the_numeric_columns_besides_the_path(tmp_path: Path) -> None:
    path = _table(tmp_path, "filepath,x1,note,x2\na.png,1.5,hello,-2e3\nb.png,2,bye,4\n")
    assert value_columns(path, "filepath") == ["x1", "x2"]
    with pytest.raises(MissingFileError, match=r"CSV file not found at '.*nope\.csv' \(config key `data\.csv`\)"):
        value_columns(tmp_path / "nope.csv", "filepath")


def test_the_csv_width_resolver_follows_the_file_or_the_named_columns(tmp_path: Path) -> None:
    register_resolvers()
    path = _table(tmp_path, "filepath,x1,x2,x3\na.png,1,2,3\nb.png,4,5,6\n")
    cfg = OmegaConf.create({"data": {"csv": str(path), "columns": None, "path_column": "filepath",
                                     "cond_dim": "${csv_width:${data.csv},${data.columns},${data.path_column}}"}})
    assert cfg.data.cond_dim == 3
    cfg.data.columns = ["x1"]
    assert cfg.data.cond_dim == 1
    cfg.data.columns, cfg.data.csv = None, str(tmp_path / "gone.csv")
    with pytest.raises(Exception) as caught:  # OmegaConf wraps the resolver's error; the entry points unwrap it
        _ = cfg.data.cond_dim
    assert isinstance(user_error_in(caught.value), MissingFileError) and "gone.csv" in str(caught.value)
    cfg.data.csv = str(_table(tmp_path, "filepath,note\na.png,x\n"))
    with pytest.raises(Exception) as caught:
        _ = cfg.data.cond_dim
    assert isinstance(user_error_in(caught.value), ConfigError) and "`data.columns`" in str(caught.value)
