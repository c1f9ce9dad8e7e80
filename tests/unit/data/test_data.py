"""Data modules: batch contract, splits, real and fake files, clear errors, Hydra configs."""

from __future__ import annotations

import gc
import logging
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF as CONF_ROOT
from conftest import compose_config
from fakes import ASSETS, REPO, fake_cifar, fake_images, fake_mnist, write_idx  # noqa: F401
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from difflab.data import (
    CIFAR10DataModule,
    CorruptDataError,
    CorruptImageError,
    DataNotFoundError,
    DigitsDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from difflab.data.base import InMemoryImageDataset, split_indices

CONF = CONF_ROOT / "data"


def check_batch(batch: dict, batch_size: int, channels: int, resolution: int, labels: bool) -> None:
    """The batch contract: float32 images in [-1, 1], int64 labels only when labelled."""
    assert set(batch) == ({"image", "label"} if labels else {"image"})
    image = batch["image"]
    assert image.shape == (batch_size, channels, resolution, resolution)
    assert image.dtype == torch.float32
    assert image.min() >= -1.0 and image.max() <= 1.0 and image.max() > image.min()
    if labels:
        assert batch["label"].shape == (batch_size,) and batch["label"].dtype == torch.int64


# ------------------------------------------------------------------------------------- digits


def test_digits_batches_and_split() -> None:
    dm = DigitsDataModule(resolution=32, batch_size=64)
    dm.setup("fit")
    assert (dm.channels, dm.resolution, dm.num_classes, dm.name) == (1, 32, 10, "digits")
    assert dm.class_names == [str(d) for d in range(10)]
    assert len(dm.train_set) + len(dm.val_set) == 1797 and len(dm.val_set) == 180
    check_batch(next(iter(dm.train_dataloader())), 64, 1, 32, labels=True)
    val = list(dm.val_dataloader())
    assert sum(len(b["label"]) for b in val) == 180
    counts = torch.bincount(torch.cat([b["label"] for b in val]), minlength=10)
    assert counts.min() >= 17 and counts.max() <= 19  # stratified: ~10% of each class
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(again["image"], val[0]["image"])  # val is deterministic


def test_split_is_deterministic_disjoint_and_seeded() -> None:
    labels = torch.arange(103) % 7
    for stratify in (None, labels):
        train, val = split_indices(103, 0.2, seed=3, labels=stratify)
        train2, val2 = split_indices(103, 0.2, seed=3, labels=stratify)
        assert torch.equal(train, train2) and torch.equal(val, val2)
        assert len(val) == 21 and set(train.tolist()).isdisjoint(val.tolist())
        assert sorted(train.tolist() + val.tolist()) == list(range(103))
        assert not torch.equal(val, split_indices(103, 0.2, seed=4, labels=stratify)[1])
    a, b = DigitsDataModule(seed=1), DigitsDataModule(seed=1)
    a.setup(), b.setup()
    assert torch.equal(a.val_set.images, b.val_set.images)
    with pytest.raises(ValueError, match="data.val_fraction"):
        split_indices(10, 1.5, seed=0)


def test_loader_options_are_validated() -> None:
    with pytest.raises(ValueError, match="data.channels"):
        DigitsDataModule(channels=3)
    with pytest.raises(ValueError, match="data.num_classes"):
        CIFAR10DataModule(root="x", num_classes=100)
    dm = DigitsDataModule()
    assert dm.pin_memory == torch.cuda.is_available() and dm.persistent_workers is False
    assert DigitsDataModule(num_workers=2).persistent_workers is True
    with pytest.raises(ValueError, match="data.batch_size"):  # drop_last would leave no batch
        DigitsDataModule(batch_size=5000).train_dataloader()


def test_hflip_flips_about_half_of_the_training_images() -> None:
    image = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4).repeat(400, 1, 1, 1)
    batch = InMemoryImageDataset(image, None, resolution=4, hflip=True).__getitems__(range(400))
    flipped = (batch["image"][:, 0, 0, 0] > batch["image"][:, 0, 0, -1]).float().mean()
    assert 0.4 < flipped < 0.6 and set(batch) == {"image"}


# -------------------------------------------------------------------------------------- mnist


def test_mnist_fake_idx(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "MNIST" / "raw", gz=False)  # torchvision's layout, uncompressed
    dm = MNISTDataModule(root=str(tmp_path), batch_size=8)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (40, 20)  # val = t10k
    check_batch(next(iter(dm.train_dataloader())), 8, 1, 32, labels=True)
    split = MNISTDataModule(root=str(tmp_path), batch_size=8, val_fraction=0.25)
    split.setup()
    assert (len(split.train_set), len(split.val_set)) == (30, 10)


def test_mnist_only_test_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_mnist(tmp_path, n_train=0, n_test=30)
    dm = MNISTDataModule(root=str(tmp_path), resolution=16, batch_size=4)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert "only the test split" in caplog.text
    assert (len(dm.train_set), len(dm.val_set)) == (27, 3)
    check_batch(next(iter(dm.val_dataloader())), 3, 1, 16, labels=True)


def test_mnist_corrupt_and_missing(tmp_path: Path) -> None:
    folder = fake_mnist(tmp_path / "m")
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])  # truncated gzip
    with pytest.raises(CorruptDataError, match="t10k-images-idx3-ubyte.gz"):
        MNISTDataModule(root=str(folder)).setup()
    write_idx(path, np.zeros((5, 28, 28)))
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte"):
        MNISTDataModule(root=str(folder)).setup()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20)
    (bad / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(CorruptDataError, match="magic number"):
        MNISTDataModule(root=str(bad)).setup()


@pytest.mark.skipif(
    not (ASSETS / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="real MNIST t10k files not in ../shared/assets/mnist",
)
def test_mnist_real_t10k() -> None:
    dm = MNISTDataModule(root=str(ASSETS / "mnist"), batch_size=256)
    dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 10_000
    batch = next(iter(dm.val_dataloader()))
    check_batch(batch, 256, 1, 32, labels=True)
    assert (batch["image"] < -0.99).float().mean() > 0.5  # mostly black background


# ------------------------------------------------------------------------------------ cifar10


def test_cifar10_fake_pickles(tmp_path: Path) -> None:
    folder = fake_cifar(tmp_path)
    for root in (tmp_path, folder):  # the parent or the batches folder itself
        dm = CIFAR10DataModule(root=str(root), batch_size=5)
        dm.setup("fit")
        assert (len(dm.train_set), len(dm.val_set)) == (30, 6)
        assert dm.class_names[:2] == ["plane", "car"] and dm.num_classes == 10
        check_batch(next(iter(dm.train_dataloader())), 5, 3, 32, labels=True)
    first, second = (next(iter(dm.val_dataloader()))["image"] for _ in range(2))
    assert torch.equal(first, second)  # no augmentation on val
    big = CIFAR10DataModule(root=str(tmp_path), resolution=64, hflip=False, batch_size=2)
    check_batch(next(iter(big.val_dataloader())), 2, 3, 64, labels=True)


def test_cifar10_missing_and_unsafe(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        CIFAR10DataModule(root=str(tmp_path / "nope")).setup()
    assert str(tmp_path / "nope") in str(err.value) and "data.root" in str(err.value)
    assert "cs.toronto.edu" in str(err.value)
    folder = fake_cifar(tmp_path / "c")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    with pytest.raises(CorruptDataError, match="test_batch"):  # only numpy globals may load
        CIFAR10DataModule(root=str(folder)).setup()


# ------------------------------------------------------------------------------- image folder


def test_image_folder_labels_and_channels(tmp_path: Path) -> None:
    root = fake_images(tmp_path / "imgs")
    dm = ImageFolderDataModule(
        root=str(root), resolution=16, labels_from_subfolders=True, num_classes=2,
        val_fraction=0.25, batch_size=4,
    )
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog"] and dm.name == "imgs"
    assert (len(dm.train_set), len(dm.val_set)) == (9, 3)
    check_batch(next(iter(dm.train_dataloader())), 4, 3, 16, labels=True)
    grey = ImageFolderDataModule(root=str(root), resolution=8, channels=1, batch_size=3,
                                 center_crop=False)
    check_batch(next(iter(grey.val_dataloader())), 1, 1, 8, labels=False)
    with pytest.raises(ValueError, match="data.num_classes=2"):
        ImageFolderDataModule(root=str(root), labels_from_subfolders=True).setup()


def test_image_folder_zip(tmp_path: Path) -> None:
    root = fake_images(tmp_path / "imgs")
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(root.rglob("*")):
            zf.write(f, Path("faces") / f.relative_to(root))  # one wrapping folder
    dm = ImageFolderDataModule(root=str(archive), resolution=16, labels_from_subfolders=True,
                               num_classes=2, batch_size=4, num_workers=1)
    assert dm.name == "faces"
    check_batch(next(iter(dm.train_dataloader())), 4, 3, 16, labels=True)
    assert dm.class_names == ["cat", "dog"]


def test_image_folder_missing_or_empty(tmp_path: Path) -> None:
    for root in (tmp_path / "nope", tmp_path):
        with pytest.raises(DataNotFoundError) as err:
            ImageFolderDataModule(root=str(root)).setup()
        assert str(root) in str(err.value) and "data.root" in str(err.value)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_image_folder_corrupt_file_in_loader(
    tmp_path: Path, num_workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch waits this long (5 s by default) for a worker that raised before killing it
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.1, raising=False)
    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "good.png")
    (root / "broken.png").write_bytes(b"this is not a png")
    dm = ImageFolderDataModule(root=str(root), resolution=8, val_fraction=0.5, hflip=False,
                               batch_size=1, num_workers=num_workers, seed=0)
    dm.setup()
    with pytest.raises(CorruptImageError, match="broken.png"):
        for loader in (dm.train_dataloader(), dm.val_dataloader()):
            list(loader)
    gc.collect()  # shut the errored worker down now, under the short timeout


def test_image_folder_verify_lists_all_bad_files(tmp_path: Path) -> None:
    root = fake_images(tmp_path / "imgs", per_class=3)
    (root / "cat" / "bad1.png").write_bytes(b"garbage")
    (root / "dog" / "bad2.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(CorruptImageError) as err:
        ImageFolderDataModule(root=str(root), verify=True).setup()
    message = str(err.value)
    assert "2 of 8 images" in message and "bad1.png" in message and "bad2.jpg" in message


@pytest.mark.skipif(
    not (ASSETS / "cifar10" / "cifar10-test-jpg.tar.gz").is_file(),
    reason="real CIFAR-10 JPEGs not in ../shared/assets/cifar10",
)
def test_image_folder_real_jpegs(tmp_path: Path) -> None:
    per_class: dict[str, int] = {}
    with tarfile.open(ASSETS / "cifar10" / "cifar10-test-jpg.tar.gz") as tf:
        for member in tf:  # test/<class>/<nnnn>.jpg; keep 4 of each class
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and per_class.get(parts[1], 0) < 4:
                per_class[parts[1]] = per_class.get(parts[1], 0) + 1
                (tmp_path / parts[1]).mkdir(exist_ok=True)
                (tmp_path / parts[1] / parts[2]).write_bytes(tf.extractfile(member).read())
    dm = ImageFolderDataModule(root=str(tmp_path), resolution=32, labels_from_subfolders=True,
                               num_classes=10, val_fraction=0.25, batch_size=10, verify=True)
    dm.setup()
    assert dm.class_names[0] == "airplane" and len(dm.val_set) == 10
    batch = next(iter(dm.val_dataloader()))
    check_batch(batch, 10, 3, 32, labels=True)
    assert sorted(batch["label"].tolist()) == list(range(10))  # stratified: one per class


# -------------------------------------------------------------------------------------- hydra


@pytest.mark.parametrize("name", ["digits", "mnist", "cifar10", "image_folder"])
def test_config_instantiates(tmp_path: Path, name: str) -> None:
    fake_mnist(tmp_path / "mnist")
    fake_cifar(tmp_path / "cifar10")
    fake_images(tmp_path / "images")
    extra = []
    if name == "image_folder":  # the folder is the user's to give
        assert OmegaConf.is_missing(OmegaConf.load(CONF / f"{name}.yaml"), "root")
        extra = [f"data.root={tmp_path / 'images'}"]
    cfg = compose_config("train", [f"data={name}", f"paths.data_dir={tmp_path}", "data.batch_size=4", *extra], tmp_path)
    dm = instantiate(cfg.data)
    assert (dm.channels, dm.resolution, dm.num_classes) == (
        cfg.data.channels, cfg.data.resolution, cfg.data.num_classes
    )
    dm.setup("fit")
    check_batch(next(iter(dm.train_dataloader())), 4, dm.channels, dm.resolution,
                labels=dm.num_classes is not None)
