"""Read mask and label images as NumPy arrays, with Pillow only (no torch).

:func:`read_mask_array` (grayscale masks) and :func:`read_rgb_mask_array` (colour label images) are the one
decoder of masks: the dataset check (:mod:`avtoolkit.data.check`) uses them directly, and the tensor readers
:func:`avtoolkit.data.video.read_mask` and :func:`~avtoolkit.data.video.read_rgb_mask` wrap them, so the check and
the datasets cannot read a mask differently. Colour and palette masks are converted to luminance as Pillow does
(ITU-R 601-2: ``L = 0.299 R + 0.587 G + 0.114 B``), as AVSBench's own loaders read them.
"""

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageMode, UnidentifiedImageError

from avtoolkit.data.errors import DatasetError


def read_mask_array(path: str | Path) -> np.ndarray:
    """Read a grayscale mask (colour or palette masks are converted to luminance).

    Args:
        path: Mask file (PNG).

    Returns:
        uint8 array ``(H, W)``.

    Raises:
        DatasetError: the file is missing, cannot be decoded or is not 8-bit.
    """
    return _read_8bit(path, "L")


def read_rgb_mask_array(path: str | Path) -> np.ndarray:
    """Read a colour label image (e.g. AVSS ``labels_rgb``), palette PNGs expanded to their colours.

    Grayscale images are repeated to three channels; alpha is dropped.

    Args:
        path: Label image (PNG).

    Returns:
        uint8 array ``(H, W, 3)``.

    Raises:
        DatasetError: the file is missing, cannot be decoded or is not 8-bit.
    """
    return _read_8bit(path, "RGB")


def _read_8bit(path: str | Path, mode: Literal["L", "RGB"]) -> np.ndarray:
    """Decode an 8-bit picture in ``mode``; a missing, undecodable or 16-bit (or wider) file is an error."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            bits = _bits_per_sample(image)
            array = np.array(image if image.mode == mode else image.convert(mode)) if bits == 8 else None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetError(f"cannot decode image {path}: {err}. Re-create or remove it.") from err
    if array is None:
        raise DatasetError(f"{path} is a {bits}-bit image; masks must be 8-bit PNGs. Re-save it as 8-bit.")
    return array


def _bits_per_sample(image: ImageFile.ImageFile) -> int:
    """Bits per sample of an opened picture, before its data is decoded (1-bit pictures count as 8-bit).

    Pillow opens 16-bit grayscale PNGs as mode ``I;16`` but 16-bit colour PNGs as 8-bit ``RGB``/``RGBA`` (the
    low bytes dropped); the raw mode of the file's data (``RGB;16B``) tells those apart.
    """
    if any(";16" in str(tile[3]) for tile in image.tile):
        return 16
    return 8 * int(ImageMode.getmode(image.mode).typestr[-1])
