"""What a W&B run has already written: the history in its local transaction logs (`run-<id>.wandb`).

W&B writes every record of a run, online or offline, to `<save_dir>/wandb/<offline-run|run>-<time>-<id>/run-<id>.wandb`
before sending it, but buffered: a process killed with SIGKILL can lose what it logged last. The file is a LevelDB-style log: a 7-byte header (':W&B', magic 0xBEE1, version 0), then 32 KiB
blocks of chunks, each a 7-byte header (CRC-32, length, type: full, first, middle, last) and part of one serialized
`Record` protobuf. A resumed run reads the history of its earlier segments so that it logs every step once
(`logged_pairs`); the tests read it back the same way.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
STEP_KEY = "trainer/global_step"  # Lightning's WandbLogger logs the trainer step under this key
INTERNAL = ("_step", "_runtime", "_timestamp", STEP_KEY)


def read_records(path: str | Path) -> Iterator[bytes]:
    """The serialized records of one transaction log, stopping at a torn or truncated tail (a killed writer)."""
    data = Path(path).read_bytes()
    if len(data) < HEADER.size or HEADER.unpack_from(data)[0] != b":W&B":
        return
    pos, parts = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        space = BLOCK - pos % BLOCK
        if space < CHUNK.size:  # the rest of a block is padding
            pos += space
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        chunk = data[pos + CHUNK.size: pos + CHUNK.size + length]
        if len(chunk) < length or kind not in (FULL, FIRST, MIDDLE, LAST) or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += CHUNK.size + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = chunk
        elif kind == MIDDLE:
            parts += chunk
        else:
            yield parts + chunk
            parts = b""


def history_rows(path: str | Path) -> Iterator[dict[str, str]]:
    """The history rows of one transaction log as {key: JSON value} (nested keys joined with '/')."""
    from wandb.proto import (
        wandb_internal_pb2 as pb,  # heavy to import; only runs that log to W&B need it
    )

    for raw in read_records(path):
        record = pb.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # noqa: BLE001  (a record torn by a kill ends the readable part)
            return
        if record.WhichOneof("record_type") == "history":
            yield {(item.key or "/".join(item.nested_key)): item.value_json for item in record.history.item}


def run_logs(wandb_dir: str | Path, run_id: str) -> list[Path]:
    """The transaction logs of run `run_id` under a `wandb/` folder, oldest first (one per start of the run)."""
    return sorted(Path(wandb_dir).glob(f"*run-*-{run_id}/run-{run_id}.wandb"), key=lambda p: p.parent.name.split("-")[-2])


def logged_pairs(wandb_dirs: list[Path], run_id: str) -> set[tuple[str, int]]:
    """The (key, trainer step) pairs that the run's earlier segments wrote to their transaction logs."""
    pairs: set[tuple[str, int]] = set()
    for folder in wandb_dirs:
        for path in run_logs(folder, run_id):
            for row in history_rows(path):
                if STEP_KEY in row:
                    step = int(float(row[STEP_KEY]))
                    pairs.update((key, step) for key in row if key not in INTERNAL)
    return pairs
