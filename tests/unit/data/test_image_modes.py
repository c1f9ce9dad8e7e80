"""Image files read right, each mode with a known value: 16-bit grey (the mid grey 32896 is 128, not white), 16-bit
RGB and grey + alpha, float TIFF, a palette with transparency, CMYK and EXIF rotation, through the decoders of
data=image_folder (and predict.py / evaluate.py images=) and data=csv."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.data.csv_table import ROIImageDataset
from difflab.data.files import CorruptImageError, ImageFileDataset, to_model_range


def png16(path: Path, values: np.ndarray, color_type: int) -> Path:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit RGB): color type 0 grey, 2 RGB, 4 grey + alpha."""
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def read(path: Path, channels: int) -> np.ndarray:
    """The uint8 pixels [H, W, C] of an image file through the image-folder decoder and the CSV (ROI) decoder, which
    must agree; the image is square, so neither resizes it."""
    size = Image.open(path).size[0]
    folder = ImageFileDataset(path.parent, [path.name], None, size, channels).load(0)
    table = ROIImageDataset(path.parent, [path.name], torch.zeros(1, 0), None, size, channels, None).load(0)
    assert torch.equal(folder, table)
    return folder.permute(1, 2, 0).numpy()


def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32896, 65535, 257], [257 * 100, 32768, 65535, 0]] * 2, dtype=np.uint16)
    path = png16(tmp_path / "grey16.png", values, 0)
    assert Image.open(path).mode == "I;16"
    pixels = read(path, 1)[..., 0]
    assert pixels[0].tolist() == [0, 128, 255, 1] and pixels[1].tolist() == [100, 128, 255, 0]
    assert (read(path, 3) == pixels[..., None]).all()  # grey to RGB keeps the level
    mid = to_model_range(torch.tensor([[[128]]], dtype=torch.uint8))
    assert abs(float(mid) - 1 / 255) < 1e-6  # a mid grey is ~0 in the model's range, not +1 (white)


def test_16_bit_rgb_and_grey_with_alpha_are_8_bit_with_alpha_on_white(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), np.uint16)
    rgb[..., 0], rgb[..., 1] = 65535, 32896
    assert read(png16(tmp_path / "rgb16.png", rgb, 2), 3)[0, 0].tolist() == [255, 128, 0]
    la = np.zeros((2, 2, 2), np.uint16)
    la[..., 0], la[0, 0, 1], la[1, 1, 1] = 0, 65535, 0  # black, opaque at (0, 0), transparent at (1, 1)
    pixels = read(png16(tmp_path / "la16.png", la, 4), 1)[..., 0]
    assert pixels[0, 0] == 0 and pixels[1, 1] == 255


def test_float_tiff_is_scaled_by_255_and_out_of_range_values_are_refused(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "float.tif").mode == "F"
    assert read(tmp_path / "float.tif", 1)[..., 0].tolist() == [[0, 64], [128, 255]]
    Image.fromarray(values * 200).save(tmp_path / "wide.tif")
    with pytest.raises(CorruptImageError, match=r"wide\.tif.*values in \[0, 1\], and this one spans \[0, 200\]"):
        ImageFileDataset(tmp_path, ["wide.tif"], None, 2, 1).load(0)
    Image.fromarray(np.full((2, 2), np.nan, np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(CorruptImageError, match=r"nan\.tif.*NaN or infinite"):
        ImageFileDataset(tmp_path, ["nan.tif"], None, 2, 1).load(0)


def test_a_palette_with_transparency_puts_transparent_pixels_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (2, 2), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black (transparent), index 1 red
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "palette.png", transparency=0)
    assert Image.open(tmp_path / "palette.png").mode == "P"
    pixels = read(tmp_path / "palette.png", 3)
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[0, 1].tolist() == [255, 0, 0]


@pytest.mark.parametrize("suffix", ["jpg", "tif"])
def test_cmyk_is_converted_to_rgb(tmp_path: Path, suffix: str) -> None:
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / f"cyan.{suffix}")  # pure cyan
    assert Image.open(tmp_path / f"cyan.{suffix}").mode == "CMYK"
    assert np.abs(read(tmp_path / f"cyan.{suffix}", 3).astype(int) - [0, 255, 255]).max() <= 2  # JPEG: nearly exact


@pytest.mark.parametrize("orientation,corner", [(1, (0, 0)), (3, (3, 3)), (6, (0, 3)), (8, (3, 0))])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, corner: tuple[int, int]) -> None:
    img = Image.new("RGB", (4, 4), (0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0))  # red at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = orientation  # 3: rotate 180; 6: rotate 90 clockwise to view; 8: 90 counter-clockwise
    img.save(tmp_path / "photo.png", exif=exif)
    pixels = read(tmp_path / "photo.png", 3)
    red = np.argwhere((pixels == [255, 0, 0]).all(-1)).tolist()
    assert red == [list(corner)]  # (row, column) where the viewer sees it
