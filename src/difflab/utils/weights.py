"""Finding pretrained weights (metrics, CLIP, pretrained VAEs and pipelines): config path, standard caches, download.

Order of resolution for every file: the path in the config, then the standard cache
(`$TORCH_HOME/hub/checkpoints/<file>` for torch hub files, the Hugging Face cache for Hub models),
then a download, only when the user allows it with `DIFFLAB_ALLOW_DOWNLOAD=1` (`DIFFLAB_OFFLINE=1` or
`HF_HUB_OFFLINE=1` forbid it even then). A downloaded torch hub file is checked against its known sha256
before it enters the cache (Hub snapshots are checked by huggingface_hub). When all fail, `MetricWeightsError`
names the file, the config key that sets it and how to get it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from difflab.errors import MissingFileError, NetworkError

log = logging.getLogger(__name__)


class MetricWeightsError(MissingFileError):
    """A metric's pretrained weights are not available; the message says where to put them."""


class WeightsDownloadError(MetricWeightsError, NetworkError):
    """An allowed download of weights failed (no network, HTTP error, wrong sha256); training skips the metric."""


@dataclass(frozen=True)
class WeightsFile:
    """A torch hub weights file: its cache name, download URL, the config key that overrides it and its sha256
    (the full digest, or the 8-digit prefix that torch hub file names carry when only that is published)."""

    what: str
    filename: str
    url: str
    config_key: str
    sha256: str


INCEPTION = WeightsFile(
    what="FID Inception-v3 weights (TF inception-2015-12-05, torch-fidelity format)",
    filename="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    config_key="metrics.weights.inception",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
)
ALEXNET = WeightsFile(
    what="LPIPS AlexNet backbone (torchvision ImageNet weights)",
    filename="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    config_key="metrics.weights.lpips_alexnet",
    sha256="7be5be79",  # torchvision publishes the prefix in the file name (torch.hub check_hash)
)
ALLOW_DOWNLOAD = "DIFFLAB_ALLOW_DOWNLOAD"


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
    if download and downloads_allowed():
        try:
            download_file(spec.url, cached, sha256=spec.sha256)
            return cached
        except (OSError, ValueError) as err:  # offline, proxy, HTTP error, timeout, wrong checksum
            raise WeightsDownloadError(f"{spec.what}: the download of {spec.url} failed ({err}). Copy '{spec.filename}' "
                               f"to '{cached}' or set the config key `{spec.config_key}` to its path.") from None
    raise MetricWeightsError(
        f"{spec.what} not found: '{cached}' is missing (config key `{spec.config_key}`). Copy '{spec.filename}' "
        f"(from {spec.url}) there or set the key to its path; or let difflab download it once with "
        f"{ALLOW_DOWNLOAD}=1 (checked against its sha256)."
    )


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def downloads_allowed() -> bool:
    """Whether a missing weight may be downloaded: only with DIFFLAB_ALLOW_DOWNLOAD=1, and never when
    DIFFLAB_OFFLINE or HF_HUB_OFFLINE is set. The default is no network at all."""
    return _flag(ALLOW_DOWNLOAD) and not (_flag("DIFFLAB_OFFLINE") or _flag("HF_HUB_OFFLINE"))


def download_file(url: str, dst: Path, sha256: str, timeout: float = 15.0) -> None:
    """Stream `url` to `dst` via a temporary file beside it, which becomes `dst` only when its sha256 starts with
    `sha256`; `timeout` bounds every network wait (no hang offline)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + ".part")
    try:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
        if not digest.hexdigest().startswith(sha256):
            raise ValueError(f"sha256 {digest.hexdigest()} is not the known {sha256}: the download is not the "
                             "expected file and was discarded")
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
        from huggingface_hub import (
            try_to_load_from_cache,  # comes with transformers; only hub lookups need it
        )
    except ImportError as err:  # transformers brings huggingface_hub
        raise MetricWeightsError("CLIP score needs the `transformers` package: pip install transformers") from err
    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return name_or_path, True
    if download and downloads_allowed():
        try:
            from huggingface_hub import (
                snapshot_download,  # comes with transformers; only hub lookups need it
            )

            snapshot_download(name_or_path, allow_patterns=["*.json", "*.txt", "*.safetensors"])
            return name_or_path, True
        except Exception as err:  # huggingface_hub raises many types for a failed download
            raise WeightsDownloadError(f"CLIP model '{name_or_path}' (config key `{key}`): the download failed ({err}). "
                               "Copy the model's Hugging Face cache here, or set the key to a local folder.") from None
    raise MetricWeightsError(
        f"CLIP model '{name_or_path}' is not in the Hugging Face cache (config key `{key}`). Run "
        f"`huggingface-cli download {name_or_path}` on a machine with internet and copy the cache, set the key to a "
        f"local folder saved with `save_pretrained`, or let difflab download it with {ALLOW_DOWNLOAD}=1."
    )
