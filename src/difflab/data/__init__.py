"""Lightning data modules yielding {"image": [B, C, H, W] in [-1, 1], "label": [B]} batches."""

from difflab.data.base import ImageDataModule
from difflab.data.files import CorruptDataError, CorruptImageError, DataNotFoundError
from difflab.data.cifar10 import CIFAR10DataModule
from difflab.data.csv_table import CSVDataModule
from difflab.data.digits import DigitsDataModule
from difflab.data.image_folder import ImageFolderDataModule
from difflab.data.mnist import MNISTDataModule
from difflab.data.shapes import ShapesDataModule
from difflab.data.vectors import CondStats

__all__ = [
    "CIFAR10DataModule",
    "CSVDataModule",
    "CondStats",
    "CorruptDataError",
    "CorruptImageError",
    "DataNotFoundError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "ShapesDataModule",
]
