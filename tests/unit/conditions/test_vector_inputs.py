"""Requested vectors reach the network finite: a value float32 cannot hold (1e39 is finite in float64, inf in float32)
or whose z-score overflows is a ConfigError naming the key, the column and the row; cond_csv rows are read strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from difflab.conditions import Vector
from difflab.data.vectors import CondStats
from difflab.errors import ConfigError, CorruptFileError


@pytest.fixture
def vector() -> Vector:
    condition = Vector()
    condition.stats = CondStats(columns=["size", "x"], mean=[1.0, 2.0], std=[0.5, 1.0])
    return condition


def test_requested_values_are_encoded_as_float32_z_scores(vector: Vector) -> None:
    requests = vector.parse({"cond": {"size": 2.0, "x": -1.0}}, n=3)
    assert requests.vectors.dtype == torch.float32 and requests.vectors.tolist() == [[2.0, -3.0]] * 3


@pytest.mark.parametrize("inputs,words", [
    ({"cond": {"size": 1e39, "x": 1}}, r"`cond\.size`: column 'size': 1e\+39 is beyond the largest float32 value"),
    ({"sweep": {"size": [0, 1e39, 3]}}, r"`sweep\.size`: column 'size': 5e\+38 is beyond the largest float32 value"),
])
def test_a_value_float32_cannot_hold_is_refused_by_key_and_column(vector: Vector, inputs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        vector.parse(inputs, n=3)


def test_a_z_score_that_overflows_float32_is_refused(vector: Vector) -> None:
    vector.stats = CondStats(columns=["size", "x"], mean=[0.0, 0.0], std=[1e-30, 1.0])
    with pytest.raises(ConfigError, match=r"`cond\.size`: .*its z-score \(1e\+10 - 0\) / 1e-30 overflows float32"):
        vector.parse({"cond": {"size": 1e10, "x": 1}}, n=1)


@pytest.mark.parametrize("text,error,words", [
    ("size,x\n1,2\n1,2,3,4,5,6,7,8,9,10\n", CorruptFileError, r"row 3 holds 10 values for the 2 columns"),
    ("size,size\n1,2\n", CorruptFileError, r"names the column\(s\) \['size'\] more than once \(config key `cond_csv`\)"),
    ("size,x\n1,2\n1e39,2\n", CorruptFileError, r"row 3: column 'size' holds 1e39, beyond the largest float32"),
    ("size,x,y\n1,2,3\n", ConfigError, r"column\(s\) \['y'\] are not"),
])
def test_cond_csv_rows_are_read_strictly(vector: Vector, tmp_path: Path, text: str, error: type, words: str) -> None:
    (tmp_path / "c.csv").write_text(text)
    with pytest.raises(error, match=words):
        vector.parse({"cond_csv": str(tmp_path / "c.csv")}, n=0)
    (tmp_path / "ok.csv").write_text("x,size\n2,1\n3,1.5\n")
    assert vector.parse({"cond_csv": str(tmp_path / "ok.csv")}, n=0).vectors.tolist() == [[0.0, 0.0], [1.0, 1.0]]
