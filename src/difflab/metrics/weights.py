"""Finding the pretrained networks that metrics need: config path, standard caches, download.

Order of resolution for every file: the path in the config, then the standard cache
(`$TORCH_HOME/hub/checkpoints/<file>` for torch hub files, the Hugging Face cache for CLIP),
then a download when the machine is online. When all fail, `MetricWeightsError` names the file,
the config key that sets it and how to get it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from difflab.errors import MissingFileError

log = logging.getLogger(__name__)


class MetricWeightsError(MissingFileError):
    """A metric's pretrained weights are not available; the message says where to put them."""


@dataclass(frozen=True)
class WeightsFile:
    """A torch hub weights file: its cache name, download URL and the config key that overrides it."""

    what: str
    filename: str
    url: str
    config_key: str


INCEPTION = WeightsFile(
    what="FID Inception-v3 weights (TF inception-2015-12-05, torch-fidelity format)",
    filename="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    config_key="metrics.weights.inception",
)
ALEXNET = WeightsFile(
    what="LPIPS AlexNet backbone (torchvision ImageNet weights)",
    filename="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    config_key="metrics.weights.lpips_alexnet",
)


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint cache ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(spec: WeightsFile, path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The local file for `spec`: `path` if given, else the torch hub cache, else downloaded into it."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise MetricWeightsError(
                f"{spec.what} not found at '{p}' (config key `{spec.config_key}`). Point the key at a copy of "
                f"'{spec.filename}' (from {spec.url}), or set it to null to use the torch hub cache."
            )
        return p
    cached = hub_checkpoint_dir() / spec.filename
    if cached.is_file():
        return cached
    if download and not offline():
        try:
            download_file(spec.url, cached)
            return cached
        except Exception as err:  # offline, proxy, HTTP error, timeout: fall through to the clear message
            log.debug("download of %s failed: %s", spec.url, err)
    raise MetricWeightsError(
        f"{spec.what} not found: '{cached}' is missing and it could not be downloaded from {spec.url}. "
        f"Download that file on a machine with internet and either copy it to '{cached}' or set the "
        f"config key `{spec.config_key}` to its path."
    )


def offline() -> bool:
    """True when DIFFLAB_OFFLINE or HF_HUB_OFFLINE is set: never try to download."""
    return any(os.environ.get(k, "") not in ("", "0") for k in ("DIFFLAB_OFFLINE", "HF_HUB_OFFLINE"))


def download_file(url: str, dst: Path, timeout: float = 15.0) -> None:
    """Stream `url` to `dst` via a temporary file; `timeout` bounds every network wait (no hang offline)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)


@lru_cache(maxsize=16)
def _hash_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hash(path: str | os.PathLike, length: int = 12) -> str:
    """The first `length` hex digits of a file's sha256 (memoised per path, size and mtime)."""
    st = os.stat(path)
    return _hash_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)[:length]


def resolve_clip(name_or_path: str, download: bool = True) -> tuple[str, bool]:
    """(name or folder, local_files_only) for Hugging Face `from_pretrained`; raises when unavailable.

    A local folder is used as is; a hub name is looked up in the Hugging Face cache first and
    downloaded when online.
    """
    key = "metrics.weights.clip"
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return str(p), True
    if name_or_path.startswith((".", "/", "~")):
        raise MetricWeightsError(f"CLIP model folder '{p}' not found (config key `{key}`).")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError as err:  # transformers brings huggingface_hub
        raise MetricWeightsError("CLIP score needs the `transformers` package: pip install transformers") from err
    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return name_or_path, True
    if download and not offline():
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(name_or_path, allow_patterns=["*.json", "*.txt", "*.safetensors"])
            return name_or_path, True
        except Exception as err:
            log.debug("download of %s failed: %s", name_or_path, err)
    raise MetricWeightsError(
        f"CLIP model '{name_or_path}' is not in the Hugging Face cache and could not be downloaded "
        f"(config key `{key}`). Run `huggingface-cli download {name_or_path}` on a machine with internet "
        "and copy the cache, or set the key to a local folder saved with `save_pretrained`."
    )
