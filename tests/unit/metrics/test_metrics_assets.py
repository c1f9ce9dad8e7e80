"""Metrics with the real networks from ../shared/assets (skipped with a reason when a file is absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from difflab.data import MNISTDataModule
from difflab.evaluation import MetricSuite, MetricsConfig
from difflab.metrics import fidelity_scores, lpips_network, to_uint8_rgb
from difflab.metrics.perceptual import LPIPSDiversity
from fakes import ASSETS

INCEPTION = ASSETS / "inception" / "inception_fid_trunk.pth"
ALEXNET = ASSETS / "lpips" / "alexnet_features_only.pth"
MNIST = ASSETS / "mnist"
N = 60  # images per half: Inception costs ~0.15 s per image on 2 CPU cores

needs_inception = pytest.mark.skipif(not INCEPTION.is_file() or not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                     reason=f"needs {INCEPTION} and the MNIST test set in {MNIST}")
needs_alexnet = pytest.mark.skipif(not ALEXNET.is_file(), reason=f"needs the LPIPS AlexNet weights {ALEXNET}")


class _UInt8Set(torch.utils.data.Dataset):
    """The images torch-fidelity reads on its own: uint8 [3, H, W]."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = to_uint8_rgb(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@pytest.fixture(scope="module")
def mnist_halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[MNISTDataModule, torch.Tensor, torch.Tensor]:
    root = tmp_path_factory.mktemp("mnist")
    for f in MNIST.glob("t10k-*"):
        shutil.copy(f, root / f.name)
    dm = MNISTDataModule(root=str(root), resolution=28, batch_size=50)
    train = torch.cat([x for x, _ in dm.iter_images("train", 0, N, 50)])
    val = torch.cat([x for x, _ in dm.iter_images("val", 0, N, 50)])
    return dm, train, val


def _suite(tmp: Path) -> MetricSuite:
    config = MetricsConfig(reference={"split": "train", "n": N}, kid_subsets=20, kid_subset_size=30, isc_splits=2,
                           lpips_diversity=False, clip_score=False, feature_batch_size=50, cache_dir=str(tmp),
                           weights={"inception": str(INCEPTION)})
    return MetricSuite(config, strict=True)


@pytest.mark.slow
@needs_inception
def test_fid_and_kid_equal_torch_fidelitys_own_computation_and_the_cache_changes_nothing(mnist_halves, tmp_path) -> None:  # noqa: ANN001
    import torch_fidelity

    dm, train, val = mnist_halves
    suite = _suite(tmp_path)
    suite.prepare_reference(dm)  # computes the statistics of the first N train images and caches them
    suite.update(val, torch.arange(N))
    ours = suite.compute()

    theirs = torch_fidelity.calculate_metrics(
        input1=_UInt8Set(val), input2=_UInt8Set(train), fid=True, kid=True, kid_subsets=20, kid_subset_size=30,
        feature_extractor_weights_path=str(INCEPTION), cuda=False, cache=False, verbose=False, batch_size=50,
    )
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
    assert ours["fid"] > 1.0
    assert "is" not in ours and "no classifier head" in suite.unavailable["is"]  # zero-filled fc: IS means nothing

    cached = _suite(tmp_path)
    cached.prepare_reference(dm)  # reads the file written above
    assert len(list(tmp_path.glob("*.pt"))) == 1
    features, logits = suite.features.compute()
    again = fidelity_scores(features, logits, cached.reference, kid_subsets=20, kid_subset_size=30, isc_splits=2)
    shared = {"fid", "kid", "kid_std"}  # the suite adds broken_rate and drops the meaningless IS of these weights
    assert {k: again[k] for k in shared} == {k: ours[k] for k in shared}
    itself = fidelity_scores(cached.reference.features, logits, cached.reference, kid=False, inception_score=False)
    assert itself["fid"] == pytest.approx(0.0, abs=1e-3 * ours["fid"])  # the reference set against itself


@needs_alexnet
def test_lpips_is_zero_for_identical_images_and_orders_perturbations(mnist_halves) -> None:  # noqa: ANN001
    _, train, val = mnist_halves
    net, digest = lpips_network(str(ALEXNET))
    assert len(digest) == 12
    metric = LPIPSDiversity(net)
    pairs = torch.stack([train[:8], train[:8]], 1).flatten(0, 1)  # (a, a), (b, b), ...
    metric.update(pairs, torch.arange(16))
    assert float(metric.compute()) == pytest.approx(0.0, abs=1e-7)

    def mean_distance(a: torch.Tensor, b: torch.Tensor) -> float:
        m = LPIPSDiversity(net)
        m.update(torch.stack([a, b], 1).flatten(0, 1), torch.arange(2 * len(a)))
        return float(m.compute())

    noisy = (train[:8] + 0.1 * torch.randn(train[:8].shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    near, far = mean_distance(train[:8], noisy), mean_distance(train[:8], val[:8])
    assert 0.0 < near < far
    assert mean_distance(val[:8], train[:8]) == pytest.approx(far, rel=1e-5)  # symmetric
