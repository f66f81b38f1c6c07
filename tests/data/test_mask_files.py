"""The NumPy mask readers (no torch), which the dataset check uses and the tensor readers wrap."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.make_avsbench import corrupt, make_avss, make_s4
from PIL import Image

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.mask_files import read_mask_array, read_rgb_mask_array
from avtoolkit.data.video import read_mask, read_rgb_mask


def write_png16_rgb(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one): signature, IHDR (depth 16, colour type 2), IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def test_read_mask_array_keeps_gray_values(tmp_path):
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[1:4, 2:7] = 255
    mask[0, 0] = 3
    Image.fromarray(mask, mode="L").save(tmp_path / "m.png")
    read = read_mask_array(tmp_path / "m.png")
    assert read.dtype == np.uint8 and read.flags.writeable
    assert np.array_equal(read, mask)


def test_colour_masks_are_read_as_pillow_luminance(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    expected = np.asarray(Image.fromarray(rgb).convert("L"))  # ITU-R 601-2, as AVSBench's PIL loaders
    assert np.array_equal(read_mask_array(tmp_path / "c.png"), expected)


def test_read_rgb_mask_array_expands_palettes_and_gray(tmp_path):
    label = Image.fromarray(np.array([[0, 1], [2, 0]], dtype=np.uint8), mode="P")
    label.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 128])
    label.save(tmp_path / "p.png")
    assert read_rgb_mask_array(tmp_path / "p.png").tolist() == [[[0, 0, 0], [128, 0, 0]], [[0, 128, 128], [0, 0, 0]]]
    Image.fromarray(np.array([[7]], dtype=np.uint8), mode="L").save(tmp_path / "g.png")
    assert read_rgb_mask_array(tmp_path / "g.png").tolist() == [[[7, 7, 7]]]


def test_16_bit_masks_are_refused(tmp_path):
    Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16)).save(tmp_path / "gray16.png")
    write_png16_rgb(tmp_path / "rgb16.png", np.full((4, 4, 3), 128 * 257, dtype=np.uint16))
    for name in ("gray16.png", "rgb16.png"):
        for read in (read_mask_array, read_rgb_mask_array):
            with pytest.raises(DatasetError, match=rf"{name} is a 16-bit image; masks must be 8-bit PNGs"):
                read(tmp_path / name)


def test_missing_and_corrupt_masks_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"not found: .*missing\.png"):
        read_mask_array(tmp_path / "missing.png")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "bad.png")
    corrupt(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match=r"cannot decode image .*bad\.png: .* Re-create or remove it"):
        read_rgb_mask_array(tmp_path / "bad.png")


def test_the_tensor_readers_agree_with_the_array_readers_on_the_fixture_masks(tmp_path):
    make_s4(tmp_path / "s4")
    make_avss(tmp_path / "avss")
    masks = sorted((tmp_path / "s4").rglob("gt_masks/**/*.png"))
    labels = sorted((tmp_path / "avss").rglob("labels_rgb/*.png"))
    assert masks and labels
    for path in masks:
        assert torch.equal(read_mask(path), torch.from_numpy(read_mask_array(path)))
    for path in labels:
        assert torch.equal(read_rgb_mask(path), torch.from_numpy(read_rgb_mask_array(path)).permute(2, 0, 1))
