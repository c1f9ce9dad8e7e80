"""Checkpoint files as data: atomic writes, loading with `weights_only=True`, clear errors for broken files.

Every checkpoint and every `torch.save` of run state goes through `atomic_save`, which is the one output
writer (`difflab.utils.files.write_output`) around `torch.save`: the bytes go to a temp file beside the target
(`.<name>.<random>.tmp`), are fsynced, then `os.replace`d onto the target, so a kill at any moment leaves
either the previous complete file or the new complete one, never a partial file under the real name; a full
disk is one message naming the file, and no temp file stays. `AtomicCheckpointIO` does the same for every
checkpoint the Trainer writes (ModelCheckpoint, SLURM's `hpc_ckpt_<n>.ckpt`, `trainer.save_checkpoint`) and
loads `ckpt_path` as data.

`load_checkpoint_file` refuses pickled code (a crafted file's payload never runs: `weights_only=True`
unpickles only tensors and plain containers) and names the file when it is empty, truncated or not a
checkpoint at all.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from difflab.errors import CorruptFileError, IncompatibleCheckpointError, UnwritableOutputError
from difflab.utils.files import TEMP_SUFFIX, temp_name_pattern, write_output

__all__ = ["TEMP_SUFFIX", "AtomicCheckpointIO", "atomic_save", "clean_temp_files", "load_checkpoint_file",
           "temp_name_pattern"]


def _serialize(obj: Any, file: Any) -> None:
    """torch.save into an open binary file (one name, so tests can interrupt a write half-way)."""
    torch.save(obj, file)


def atomic_save(obj: Any, path: str | Path, key: str | None = None) -> Path:
    """torch.save `obj` to `path` atomically through the one output writer (a device or a symbolic link at `path`
    is refused; a full disk is an UnwritableOutputError naming the file and `key`)."""
    return write_output(path, lambda file: _serialize(obj, file), key=key, overwrite=True)


def clean_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files that killed writes left anywhere under a run folder (W&B's own folder aside: a killed
    run's W&B process may still be finishing there); returns them."""
    folder = Path(folder)
    stale = [p for p in folder.rglob(temp_name_pattern()) if p.is_file() and "wandb" not in p.relative_to(folder).parts]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _unsafe(err: BaseException) -> bool:
    """Whether torch refused the file because it pickles code or objects (not because it is broken)."""
    text = str(err)
    return isinstance(err, pickle.UnpicklingError) and ("Unsupported global" in text or "GLOBAL" in text)


def _first_reason(err: BaseException) -> str:
    """The informative line of torch's long loading errors."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    marker = next((i for i, line in enumerate(lines) if line.startswith("WeightsUnpickler error")), None)
    line = lines[marker + 1] if marker is not None and marker + 1 < len(lines) else (lines[0] if lines else "")
    return f"{type(err).__name__}: {line.split('. This is an internal')[0][:120]}"


def load_checkpoint_file(path: str | Path, key: str = "ckpt", map_location: Any = "cpu", mmap: bool = False) -> Any:
    """torch.load(weights_only=True) a checkpoint; CorruptFileError when it is empty, truncated or no checkpoint,
    IncompatibleCheckpointError when it holds pickled code or objects (which are never run)."""
    path = Path(path).expanduser()
    if path.is_file() and path.stat().st_size == 0:
        raise CorruptFileError.for_file(path, f"the file is empty (0 bytes), config key `{key}`",
                                        "It was cut off while being written; use an earlier checkpoint of the run.")
    try:
        mmap = mmap and zipfile.is_zipfile(path)  # only torch's zip format maps; other files get torch's own error
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if _unsafe(err):
            first = next((line for line in str(err).splitlines() if "GLOBAL" in line), "").strip()
            raise IncompatibleCheckpointError(
                f"Refusing to load '{path}' (config key `{key}`): it holds pickled Python objects, not only tensors "
                f"and plain data ({first or 'unsupported global'}); nothing in it was run. difflab checkpoints are "
                "plain data: use a checkpoint written by difflab, or re-save this one as a state dict.") from None
        reason = f"it is not a PyTorch checkpoint ({_first_reason(err)})"
    except Exception as err:  # noqa: BLE001  (broken bytes fail in many ways: zip, struct, EOF, unpickling)
        reason = f"it is truncated or not a PyTorch checkpoint ({_first_reason(err)})"
    raise CorruptFileError.for_file(path, f"{reason}, config key `{key}`",
                                    "Pass a .ckpt written by difflab (<run>/checkpoints/last.ckpt).")


class AtomicCheckpointIO(TorchCheckpointIO):
    """The Trainer's checkpoint IO: atomic writes (`atomic_save`) and `weights_only=True` loads of `ckpt_path`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Write `checkpoint` to `path` atomically."""
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        try:
            atomic_save(checkpoint, path)
        except UnwritableOutputError as err:  # e.g. a full disk: the earlier checkpoint is whole (atomic writes)
            kept = (f" The earlier {Path(path).name} is whole: once it can be written, resume with ckpt_path={path}."
                    if Path(path).is_file() else "")
            raise UnwritableOutputError(f"{err}{kept}") from None

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Load `path` (the `ckpt_path` of a resume) as data."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint_file(path, key="ckpt_path", map_location=map_location or "cpu")
