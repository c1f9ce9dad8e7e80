"""Output files: the one writer of every file difflab produces (checkpoints, CSV tables, JSON records, plots).

`write_output(path, fill, key=...)` is the only way an output reaches the disk:

- the target must be a regular file or absent: a device (`/dev/full`), a FIFO, a socket or a folder is refused,
  and so is a symbolic link unless `follow_symlinks` (then the file it points to is written and the link stays);
- an existing file is replaced only with `overwrite`;
- the bytes go to a temp file beside the target (`.<name>.<random>.tmp`), are fsynced, then `os.replace`d onto
  the target, so a kill at any moment leaves the previous complete file or the new one, never a partial file;
- an OSError on the way (a full disk, a quota, no permission, a read-only file system) becomes one
  `UnwritableOutputError` naming the path and the config key, and no temp file survives any error.

`write_text` and `write_json` are its two common forms; `write_json` writes records that never hold NaN or
Infinity (non-finite numbers become null, with a warning naming them). `create_folder` makes an output folder with
the same errors.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from difflab.errors import UnwritableOutputError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
# errno -> (what it means, what to do)
_REASONS = {
    errno.ENOSPC: ("no space left on the device", "Free some space, or write it elsewhere"),
    errno.EDQUOT: ("the disk quota is exceeded", "Free some space, or write it elsewhere"),
    errno.EACCES: ("permission denied", "Write it where you have permission"),
    errno.EPERM: ("operation not permitted", "Write it where you have permission"),
    errno.EROFS: ("the file system is read-only", "Write it on a writable disk"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "Fix the path"),
}


def temp_name_pattern(name: str = "*") -> str:
    """The glob of the writer's temp files for a target file name (all targets with '*')."""
    return f".{name}.*{TEMP_SUFFIX}"


def _key_text(key: str | None) -> str:
    return f" (config key `{key}`)" if key else ""


def unwritable(err: OSError, path: str | Path, key: str | None, doing: str = "write") -> UnwritableOutputError:
    """The UnwritableOutputError of an OSError met while `doing` (write, create the folder) `path`: what happened,
    the path, the key, the fix."""
    reason, fix = _REASONS.get(err.errno or 0, (err.strerror or str(err), "Write it elsewhere"))
    code = errno.errorcode.get(err.errno or 0)
    out = UnwritableOutputError(f"Cannot {doing} '{path}'{_key_text(key)}: {reason}{f' ({code})' if code else ''}; "
                                f"nothing was written there. {fix}" + (f" (pass {key}=<another path>)." if key else "."))
    out.path, out.errno = str(path), err.errno
    return out


def create_folder(path: str | Path, key: str | None = None) -> Path:
    """Create the folder `path` and its parents; an UnwritableOutputError naming it and `key` when that fails."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UnwritableOutputError(f"Cannot use '{folder}' as a folder{_key_text(key)}: it is a file. "
                                    f"Pass {key or 'another path'}=<a folder>.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise unwritable(err, err.filename or folder, key, "create the folder") from None
    return folder


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def output_path(path: str | Path, key: str | None = None, overwrite: bool = False, follow_symlinks: bool = False) -> Path:
    """The file to write for output `path`, after the writer's checks (nothing is written): a regular file or
    nothing there, no symbolic link unless `follow_symlinks` (its target is returned), no existing file unless
    `overwrite`; an UnwritableOutputError naming the path, `key` and the fix otherwise."""
    path = Path(path).expanduser()
    name = key or "the output"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as err:
        raise unwritable(err, path, key) from None
    if stat.S_ISLNK(info.st_mode):
        if not follow_symlinks:
            raise UnwritableOutputError(
                f"The output '{path}'{_key_text(key)} is a symbolic link (to '{os.readlink(path)}'); difflab replaces "
                f"files, never links, and nothing was written. Pass {name}=<the file itself>, or follow_symlinks=true "
                "to write into the file the link points to.")
        return output_path(path.resolve(), key, overwrite, follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode):
        raise UnwritableOutputError(f"The output '{path}'{_key_text(key)} is {_kind(info.st_mode)}, not a regular file; "
                                    f"nothing was written to it. Pass {name}=<a file path>.")
    if not overwrite:
        raise UnwritableOutputError(f"The output file '{path}'{_key_text(key)} already exists; nothing is overwritten. "
                                    f"Pass another {name}=<file>, or overwrite=true to replace it.")
    return path


def _open_temp(target: Path) -> tuple[int, Path]:
    """A new temp file beside `target`, opened for writing (mode 0o666 less the umask, like any new file)."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue


def _fill(file: IO[bytes], fill: Callable[[IO[bytes]], Any]) -> None:
    """Write the content into the open temp file (one name, so tests can simulate a full disk or a kill)."""
    fill(file)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. platforms without directory file descriptors
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_output(path: str | Path, fill: Callable[[IO[bytes]], Any], *, key: str | None = None,
                 overwrite: bool = False, follow_symlinks: bool = False) -> Path:
    """Write an output file atomically with `fill(binary file)`, after `output_path`'s checks; returns the file
    written. Errors of the disk become an UnwritableOutputError naming the path and `key`; no temp file stays."""
    target = output_path(path, key, overwrite, follow_symlinks)
    create_folder(target.parent, key)
    try:
        fd, tmp = _open_temp(target)
    except OSError as err:
        raise unwritable(err, target, key) from None
    try:
        with os.fdopen(fd, "wb") as file:
            _fill(file, fill)
            file.flush()
            os.fsync(file.fileno())
        if target.exists():  # overwrite: the new file keeps the old one's permissions
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise unwritable(err, target, key) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def write_text(path: str | Path, text: str, *, key: str | None = None, overwrite: bool = False,
               follow_symlinks: bool = False) -> Path:
    """`write_output` of a UTF-8 text."""
    data = text.encode("utf-8")
    return write_output(path, lambda file: file.write(data), key=key, overwrite=overwrite,
                        follow_symlinks=follow_symlinks)


def finite_json(obj: Any, where: str = "") -> tuple[Any, list[str]]:
    """`obj` as plain JSON data (tensors and numpy scalars as numbers, tuples as lists) with every NaN or infinite
    number replaced by None; returns it and the paths of the replaced numbers ('values.fid', 'cond[2].size')."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj, []
    if isinstance(obj, float):
        return (obj, []) if math.isfinite(obj) else (None, [where or "<top>"])
    if isinstance(obj, Mapping):
        out, bad = {}, []
        for k, v in obj.items():
            out[str(k)], found = finite_json(v, f"{where}.{k}" if where else str(k))
            bad += found
        return out, bad
    if isinstance(obj, (list, tuple)):
        pairs = [finite_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return [p[0] for p in pairs], [b for p in pairs for b in p[1]]
    if hasattr(obj, "tolist"):  # torch / numpy values
        return finite_json(obj.tolist(), where)
    if isinstance(obj, Path):
        return str(obj), []
    return str(obj), []


def write_json(path: str | Path, record: Any, *, key: str | None = None, overwrite: bool = True,
               follow_symlinks: bool = False) -> Path:
    """Write a JSON record (indented) with `write_output`; NaN and Infinity never reach the file: such numbers are
    written as null and a warning names them."""
    clean, bad = finite_json(record)
    if bad:
        log.warning("%s: %d non-finite number(s) written as null: %s", path, len(bad), ", ".join(bad[:8]))
    text = json.dumps(clean, indent=2, allow_nan=False) + "\n"
    return write_text(path, text, key=key, overwrite=overwrite, follow_symlinks=follow_symlinks)
