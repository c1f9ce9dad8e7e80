"""One bad metrics.json never stops the table, and the comparison's files go through the one output writer."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from difflab.compare import build_table, check_record, collect_local, write_comparison
from difflab.errors import UnwritableOutputError
from difflab.utils import files
from difflab.utils.files import temp_name_pattern

GOOD = {"kind": "evaluate", "variant": "ddpm", "scheduler": "ddpm_linear", "data": {"name": "digits", "resolution": 16},
        "sampler": {"name": "ddim", "steps": 10, "eta": 0.0}, "values": {"fid": 12.5, "nfe": 10.0},
        "protocol": {"metrics": ["fid"], "unavailable": {}}}
# (folder, a change to the good record, the words of the warning)
BAD = [
    ("protocol_string", {"protocol": "x"}, '`protocol` is "x", not an object'),
    ("sampler_name_list", {"sampler": {"name": ["ddim"], "steps": 10}}, '`sampler.name` is ["ddim"], not a string'),
    ("sampler_number", {"sampler": 5}, "`sampler` is 5, not an object or a string"),
    ("data_list", {"data": ["digits"]}, '`data` is ["digits"], not an object or a string'),
    ("unavailable_list", {"protocol": {"unavailable": ["is"]}}, '`protocol.unavailable` is ["is"], not an object'),
]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    for name, change in [("good_a", {}), ("good_b", {"sampler": {"name": "ddim", "steps": 20, "eta": 0.0}}),
                         *[(name, change) for name, change, _ in BAD]]:
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps({**GOOD, **change}))
    return runs


def test_every_unreadable_record_is_skipped_with_a_warning_naming_it_and_the_rest_is_the_table(
        runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="difflab.compare.table"):
        records = collect_local(runs)
    assert sorted(Path(r["run_dir"]).name for r in records) == ["good_a", "good_b"]
    for name, _, words in BAD:
        assert f"skipping {runs / name / 'metrics.json'}: not a metrics.json record ({words})" in caplog.text
    rows = build_table(records)  # what compare.py and the studio's Runs tab show
    assert [(r["sampler"], r["steps"], r["fid"]) for r in rows] == [("ddim", 10, 12.5), ("ddim", 20, 12.5)]
    for _, change, _ in BAD:  # each bad record would have stopped the table of every run
        assert check_record({**GOOD, **change}) is not None
    assert check_record(GOOD) is None and check_record({**GOOD, "sampler": "ddim", "data": "digits"}) is None


def test_an_earlier_comparison_is_replaced_only_with_overwrite(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rows, paths, _ = write_comparison(collect_local(runs), out, "runs", runs)
    assert len(rows) == 2 and {p.name for p in paths.values()} == {"comparison.md", "comparison.csv", "fid_vs_nfe.png",
                                                                   "fid_vs_samples_per_sec.png"}
    (out / "comparison.md").write_text("my notes\n")
    with pytest.raises(UnwritableOutputError, match=r"(?s)out' \(config key `out_dir`\) already holds a comparison "
                                                    r"\(comparison\.md, comparison\.csv.*overwrite=true"):
        write_comparison(collect_local(runs), out, "runs", runs)
    assert (out / "comparison.md").read_text() == "my notes\n"
    write_comparison(collect_local(runs), out, "runs", runs, overwrite=True)
    assert "2 runs from runs" in (out / "comparison.md").read_text()


def test_a_linked_output_is_refused_before_anything_is_written(runs: Path, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere.md"
    out.mkdir()
    elsewhere.write_text("keep\n")
    (out / "comparison.md").symlink_to(elsewhere)
    with pytest.raises(UnwritableOutputError, match=r"comparison\.md' \(config key `out_dir`\) is a symbolic link"):
        write_comparison(collect_local(runs), out, "runs", runs, overwrite=True)
    assert elsewhere.read_text() == "keep\n" and sorted(p.name for p in out.iterdir()) == ["comparison.md"]


def test_a_full_disk_names_the_file_and_leaves_no_temp(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(file, fill) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_fill", full)
    with pytest.raises(UnwritableOutputError, match=r"comparison\.md' \(config key `out_dir`\): no space left"):
        write_comparison(collect_local(runs), tmp_path / "out", "runs", runs)
    assert not list((tmp_path / "out").rglob(temp_name_pattern()))
