"""The one output writer: regular files only, `overwrite` respected, atomic, a full or read-only disk named in one
message, no temp file after any error; JSON records without NaN or Infinity."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from pathlib import Path

import pytest
import torch

from difflab.errors import UnwritableOutputError
from difflab.evaluation.score import write_record
from difflab.utils import files
from difflab.utils.checkpoint_files import atomic_save
from difflab.utils.files import create_folder, finite_json, temp_name_pattern, write_json, write_text


def _no_temp(folder: Path) -> bool:
    return not list(folder.rglob(temp_name_pattern()))


def test_writes_atomically_and_replaces_only_with_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "table.csv"
    assert write_text(out, "x,y\n", key="out") == out and out.read_text() == "x,y\n"
    with pytest.raises(UnwritableOutputError, match=r"(?s)table\.csv.*`out`.*already exists.*overwrite=true"):
        write_text(out, "new\n", key="out")
    assert out.read_text() == "x,y\n"
    out.chmod(0o640)
    write_text(out, "new\n", key="out", overwrite=True)
    assert out.read_text() == "new\n" and stat.S_IMODE(out.stat().st_mode) == 0o640  # the old file's permissions
    fresh = write_text(tmp_path / "fresh.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # a new file: like open(), not mkstemp's 0600
    assert _no_temp(tmp_path)


def test_a_device_is_refused_and_left_alone_even_with_overwrite(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(UnwritableOutputError, match=r"(?s)'/dev/full' \(config key `out`\) is a character device.*out="):
        write_text("/dev/full", "x", key="out", overwrite=True)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    (tmp_path / "folder").mkdir()
    with pytest.raises(UnwritableOutputError, match="is a folder"):
        write_text(tmp_path / "folder", "x", key="out", overwrite=True)


def test_a_symbolic_link_is_refused_unless_follow_symlinks(tmp_path: Path) -> None:
    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    with pytest.raises(UnwritableOutputError, match=r"(?s)link\.csv.*symbolic link.*real\.csv.*follow_symlinks=true"):
        write_text(link, "new\n", key="out", overwrite=True)
    assert link.is_symlink() and target.read_text() == "old\n"
    write_text(link, "new\n", key="out", overwrite=True, follow_symlinks=True)
    assert link.is_symlink() and target.read_text() == "new\n"  # the link stays, the file it names is written
    assert _no_temp(tmp_path)


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left on the device (ENOSPC)"),
                                        (errno.EDQUOT, "disk quota is exceeded (EDQUOT)"),
                                        (errno.EACCES, "permission denied (EACCES)"),
                                        (errno.EROFS, "read-only (EROFS)")])
def test_a_full_or_refused_disk_is_one_message_and_no_temp_file_survives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        code: int, words: str) -> None:
    out = tmp_path / "preds.csv"
    out.write_text("the earlier file\n")

    def half_then_fail(file, fill) -> None:
        file.write(b"half of it")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files, "_fill", half_then_fail)
    with pytest.raises(UnwritableOutputError) as caught:
        write_text(out, "new\n", key="out", overwrite=True)
    text = str(caught.value)
    assert f"Cannot write '{out}' (config key `out`)" in text and words in text and "out=<another path>" in text
    assert out.read_text() == "the earlier file\n" and _no_temp(tmp_path)


def test_a_checkpoint_on_a_full_disk_keeps_the_previous_one_and_leaves_no_temp(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    atomic_save({"step": torch.tensor(1)}, target)
    monkeypatch.setattr(files, "_fill", lambda file, fill: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(UnwritableOutputError, match=r"last\.ckpt.*no space left"):
        atomic_save({"step": torch.tensor(2)}, target)
    assert torch.load(target, weights_only=True)["step"] == 1 and _no_temp(tmp_path)


def test_a_folder_that_cannot_be_made_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(UnwritableOutputError, match=r"Cannot create the folder '/proc/x(/y)?' \(config key `paths.runs_dir`\)"):
        create_folder("/proc/x/y", "paths.runs_dir")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UnwritableOutputError, match=r"a_file.*`out_dir`.*it is a file.*out_dir=<a folder>"):
        create_folder(tmp_path / "a_file", "out_dir")


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in the JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_records_never_hold_nan_or_infinity(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    record = {"values": {"fid": float("nan"), "is": 2.5, "kid": float("inf")}, "cond": [{"size": float("-inf")}],
              "t": torch.tensor([1.0, float("nan")]), "n": 3, "path": tmp_path}
    with caplog.at_level(logging.WARNING, logger="difflab.utils.files"):
        path = write_json(tmp_path / "samples.json", record)
    data = _strict(path.read_text())
    assert data == {"values": {"fid": None, "is": 2.5, "kid": None}, "cond": [{"size": None}], "t": [1.0, None],
                    "n": 3, "path": str(tmp_path)}
    assert "4 non-finite number(s) written as null: values.fid, values.kid, cond[0].size, t[1]" in caplog.text
    assert finite_json({"a": [1, 2.0]}) == ({"a": [1, 2.0]}, [])
    metrics = write_record({"kind": "evaluate", "values": {"fid": float("inf")}}, tmp_path / "metrics.json")
    assert _strict(metrics.read_text())["values"] == {"fid": None}  # metrics.json goes through the same writer
