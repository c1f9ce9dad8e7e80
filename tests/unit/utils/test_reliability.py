"""Inputs that used to fail late or silently: attention sizes that follow data.resolution, downloads only when
allowed and only of the known file (sha256)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import compose_config
from difflab.utils import weights


@pytest.mark.parametrize("overrides,attention", [
    (["data=image_folder", "data.root=x"], [32]),                       # the README's 64 px image folder
    (["data.resolution=32"], [16]),
    (["model=ldm"], [2]),                                               # 16 px digits -> 4 x 4 latents
    (["experiment=cifar10_ddpm", "data.root=x", "data.resolution=64"], [32]),
])
def test_attention_sizes_follow_the_data_resolution(tmp_path: Path, overrides: list[str], attention: list[int]) -> None:
    cfg = compose_config("train", ["model.net.base_channels=8", "model.net.num_heads=1", *overrides], tmp_path)
    assert list(cfg.model.net.attention_resolutions) == attention
    net = instantiate(cfg.model.net)  # the UNet accepts them: each is a feature-map size of that resolution
    assert any(type(m).__name__ == "AttentionBlock" for m in net.down.modules())


def test_downloads_need_the_switch_and_old_offline_variables_still_forbid_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DIFFLAB_ALLOW_DOWNLOAD", "DIFFLAB_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert not weights.downloads_allowed()  # the default: never the network
    monkeypatch.setenv("DIFFLAB_ALLOW_DOWNLOAD", "1")
    assert weights.downloads_allowed()
    monkeypatch.setenv("DIFFLAB_OFFLINE", "1")
    assert not weights.downloads_allowed()


def test_a_download_is_kept_only_with_the_known_sha256(tmp_path: Path) -> None:
    source = tmp_path / "served.pth"
    source.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    good = tmp_path / "cache" / "good.pth"
    weights.download_file(source.as_uri(), good, sha256=digest)
    assert good.read_bytes() == source.read_bytes()
    weights.download_file(source.as_uri(), tmp_path / "cache" / "prefix.pth", sha256=digest[:8])  # torch hub style
    bad = tmp_path / "cache" / "bad.pth"
    with pytest.raises(ValueError, match="sha256"):
        weights.download_file(source.as_uri(), bad, sha256="0" * 64)
    assert sorted(p.name for p in bad.parent.iterdir()) == ["good.pth", "prefix.pth"]  # no bad or partial file


def test_a_missing_weight_names_the_file_key_and_switch_and_never_downloads(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DIFFLAB_ALLOW_DOWNLOAD", "DIFFLAB_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "download_file", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(weights.MetricWeightsError) as err:
        weights.resolve_weights(weights.INCEPTION)
    for needle in (weights.INCEPTION.filename, "`metrics.weights.inception`", "DIFFLAB_ALLOW_DOWNLOAD=1"):
        assert needle in str(err.value)
    monkeypatch.setenv("DIFFLAB_ALLOW_DOWNLOAD", "1")
    monkeypatch.setattr(weights, "download_file", lambda *a, **k: (_ for _ in ()).throw(OSError("no route to host")))
    with pytest.raises(weights.WeightsDownloadError, match="no route to host"):  # a MetricWeightsError: training skips
        weights.resolve_weights(weights.INCEPTION)
