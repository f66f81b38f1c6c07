"""Pictures of sound sources on real backgrounds, composited with exact per-object masks.

A sprite is an emoji glyph (Noto Color Emoji) or an openclipart SVG, cropped to its alpha. A backdrop is a
crop of a real photo or texture from scikit-image, colour-jittered and slowly panned. :func:`composite`
pastes posed sprites (scaled, rotated) on a backdrop frame and reports, per pixel, which sprite owns it: the
one whose alpha, after the occlusion by the sprites pasted later, exceeds one half.
"""

import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.synth.assets import BACKGROUND_FILES, EMOJI_PIXEL_SIZE, Assets, check_clipart, check_emoji
from avtoolkit.utils.imports import lazy_import

SVG_LONGEST_SIDE = 256
"""Clip art is rasterised once at this size (longest side, pixels), then resized for each frame."""


@dataclass(frozen=True)
class Picture:
    """Where a sprite comes from.

    Args:
        kind: "emoji" (a Noto Color Emoji glyph) or "clipart" (an openclipart SVG).
        ref: The emoji itself, or the SVG's path relative to the clip-art folder.
    """

    kind: Literal["emoji", "clipart"]
    ref: str


PICTURES: dict[str, Picture] = {
    "accordion": Picture("emoji", "\U0001fa97"),
    "ambulance": Picture("emoji", "\U0001f691"),
    "banjo": Picture("emoji", "\U0001fa95"),
    "bird": Picture("emoji", "\U0001f426"),
    "cello": Picture("clipart", "recreation/music/cello_ganson.svg"),
    "drum": Picture("emoji", "\U0001f941"),
    "flute": Picture("emoji", "\U0001fa88"),
    "french_horn": Picture("clipart", "recreation/music/french_horn_ganson.svg"),
    "guitar": Picture("clipart", "recreation/music/guitar_ganson.svg"),
    "harp": Picture("clipart", "recreation/music/harp1_ganson.svg"),
    "helicopter": Picture("emoji", "\U0001f681"),
    "oboe": Picture("clipart", "recreation/music/oboe_ganson.svg"),
    "piano": Picture("emoji", "\U0001f3b9"),
    "pistol": Picture("emoji", "\U0001f52b"),
    "saxophone": Picture("emoji", "\U0001f3b7"),
    "trumpet": Picture("emoji", "\U0001f3ba"),
    "violin": Picture("emoji", "\U0001f3bb"),
    "xylophone": Picture("clipart", "recreation/music/xylophone_ganson.svg"),
}
"""Every picture the datasets use, by name (what it shows)."""


class Pose(NamedTuple):
    """How a sprite is drawn in one frame: centre (pixels), longest side (pixels), angle (degrees)."""

    x: float
    y: float
    longest: float
    angle: float


def check_pictures(names: list[str], assets: Assets) -> None:
    """Make sure every picture of ``names`` can be drawn with ``assets`` (fails early, before any work).

    Raises:
        DatasetError: a glyph or clip-art file is missing, naming the package to install.
    """
    pictures = [PICTURES[name] for name in names]
    check_emoji(assets.emoji_font, [p.ref for p in pictures if p.kind == "emoji"])
    check_clipart(assets.clipart_dir, [p.ref for p in pictures if p.kind == "clipart"])


@cache
def sprite(name: str, emoji_font: Path, clipart_dir: Path) -> Image.Image:
    """The picture ``name`` cropped to its alpha, premultiplied ("RGBa"); cached per process."""
    picture = PICTURES[name]
    if picture.kind == "emoji":
        image = _render_emoji(picture.ref, emoji_font)
    else:
        image = _render_svg(clipart_dir / picture.ref)
    box = image.getchannel("A").getbbox()
    if box is None:
        raise DatasetError(f"the picture {name!r} ({picture.ref}) renders empty; check the emoji font/clip art")
    return image.crop(box).convert("RGBa")


def _render_emoji(emoji: str, font_path: Path) -> Image.Image:
    font = ImageFont.truetype(str(font_path), EMOJI_PIXEL_SIZE)
    canvas = Image.new("RGBA", (2 * EMOJI_PIXEL_SIZE, 2 * EMOJI_PIXEL_SIZE))
    ImageDraw.Draw(canvas).text((EMOJI_PIXEL_SIZE // 4, EMOJI_PIXEL_SIZE // 4), emoji, font=font, embedded_color=True)
    return canvas


def _render_svg(path: Path) -> Image.Image:
    resvg = lazy_import("resvg_py", "synth")

    def render(**size: int) -> Image.Image:
        png = resvg.svg_to_bytes(svg_path=str(path), skip_system_fonts=True, **size)
        return Image.open(io.BytesIO(bytes(png))).convert("RGBA")

    image = render(width=SVG_LONGEST_SIDE)
    return render(height=SVG_LONGEST_SIDE) if image.height > image.width else image


def resized(image: Image.Image, longest: float) -> Image.Image:
    """``image`` resized (antialiased) so that its longest side is ``longest`` pixels."""
    scale = longest / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def posed(image: Image.Image, longest: float, angle: float) -> Image.Image:
    """``image`` scaled so that its longest side is ``longest`` pixels and rotated by ``angle`` degrees.

    One bilinear affine transform into the rotated box: fast, and sharp for scales near 1 (resize a sprite
    near its final size with :func:`resized` first: the transform does not antialias strong reductions).
    """
    scale = longest / max(image.size)
    width, height = posed_size(image.size, Pose(0.0, 0.0, longest, angle))
    out = (max(1, int(np.ceil(width))), max(1, int(np.ceil(height))))
    theta = np.radians(angle)
    cos, sin = np.cos(theta) / scale, np.sin(theta) / scale
    # Output pixel (x, y) samples input (a x + b y + c, d x + e y + f): the inverse rotation and scaling
    # about the centres (counter-clockwise for a positive angle, like Image.rotate).
    a, b, d, e = cos, -sin, sin, cos
    cx, cy = out[0] / 2, out[1] / 2
    c = image.width / 2 - (a * cx + b * cy)
    f = image.height / 2 - (d * cx + e * cy)
    return image.transform(out, Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR)


def posed_size(image_size: tuple[int, int], pose: Pose) -> tuple[float, float]:
    """Width and height of the box :func:`posed` returns (without drawing it)."""
    scale = pose.longest / max(image_size)
    width, height = image_size[0] * scale, image_size[1] * scale
    cos, sin = abs(np.cos(np.radians(pose.angle))), abs(np.sin(np.radians(pose.angle)))
    return width * cos + height * sin, width * sin + height * cos


@cache
def _photo(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


@dataclass(frozen=True)
class Backdrop:
    """A colour-jittered, defocused crop of a real photo, seen by a camera that pans slowly over the clip.

    Args:
        image: The part of the photo that the pan covers, prepared once per clip: jittered, flipped, shrunk to
            little more than the frame's resolution, blurred.
        start: Crop box ``(left, top, right, bottom)`` in ``image`` at the start of the clip.
        shift: How far the box moves by the end of the clip (pixels of ``image``, x and y).
        size: Side of the square frames (pixels).
    """

    image: Image.Image
    start: tuple[float, float, float, float]
    shift: tuple[float, float]
    size: int

    def frame(self, t: float) -> np.ndarray:
        """The RGB uint8 frame at time ``t`` ∈ [0, 1] of the clip."""
        dx, dy = self.shift[0] * t, self.shift[1] * t
        width, height = self.image.size  # (min/max: the pan stays inside but for rounding)
        box = (
            max(0.0, self.start[0] + dx),
            max(0.0, self.start[1] + dy),
            min(width, self.start[2] + dx),
            min(height, self.start[3] + dy),
        )
        return np.asarray(self.image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box))


def backdrop(
    rng: np.random.Generator, backgrounds_dir: Path, size: int, defocus: tuple[float, float] = (0.0, 1.0)
) -> Backdrop:
    """A random backdrop for ``size``-pixel frames.

    A photo, a square crop of 45–90 % of its short side panning by up to 8 % of that, colour jitter, a
    left-right flip half of the time, and a defocus blur whose radius (output pixels) is drawn from the
    range ``defocus``.
    """
    photo = _photo(backgrounds_dir / BACKGROUND_FILES[int(rng.integers(len(BACKGROUND_FILES)))])
    side = rng.uniform(0.45, 0.9) * min(photo.size)
    shift = rng.uniform(-0.08, 0.08, size=2) * side
    left = rng.uniform(max(0.0, -shift[0]), photo.width - side - max(0.0, shift[0]))
    top = rng.uniform(max(0.0, -shift[1]), photo.height - side - max(0.0, shift[1]))
    # Prepare only the region the pan covers.
    x0, y0 = int(left + min(0.0, shift[0])), int(top + min(0.0, shift[1]))
    x1 = int(np.ceil(left + side + max(0.0, shift[0])))
    y1 = int(np.ceil(top + side + max(0.0, shift[1])))
    region = Image.fromarray(_jitter(np.asarray(photo.crop((x0, y0, x1, y1))), rng))
    box = (left - x0, top - y0, left - x0 + side, top - y0 + side)
    if rng.random() < 0.5:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        box = (region.width - box[2], box[1], region.width - box[0], box[3])
        shift[0] = -shift[0]
    # Resampling costs grow with the source: shrink the region to little more than the frame's resolution.
    shrink = min(1.0, 1.25 * size / side)
    target = (max(1, round(region.width * shrink)), max(1, round(region.height * shrink)))
    sx, sy = target[0] / region.width, target[1] / region.height
    region = region.resize(target, Image.Resampling.LANCZOS)
    region = region.filter(ImageFilter.GaussianBlur(rng.uniform(*defocus) * side * sx / size))
    return Backdrop(
        image=region,
        start=(box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy),
        shift=(float(shift[0] * sx), float(shift[1] * sy)),
        size=size,
    )


def _jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter: white balance (tints grey textures), saturation, contrast, brightness."""
    x = rgb.astype(np.float32) / 255.0
    x = x * rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + (x - grey) * np.float32(rng.uniform(0.6, 1.4))
    mean = np.float32(x.mean())
    x = (x - mean) * np.float32(rng.uniform(0.7, 1.2)) + mean * np.float32(rng.uniform(0.75, 1.2))
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def composite(
    background: np.ndarray, layers: list[tuple[Image.Image, tuple[int, int]]]
) -> tuple[np.ndarray, np.ndarray]:
    """Paste premultiplied sprites on a frame, each at its ``(left, top)``, later ones in front.

    Args:
        background: (H, W, 3) uint8.
        layers: ``(sprite in mode "RGBa", (left, top))`` back to front; parts outside the frame are cut.

    Returns:
        The (H, W, 3) uint8 frame and the (H, W) int8 owner map: the index of the layer whose visible alpha
        (its alpha times the transparency of every layer in front of it) exceeds 0.5, or -1 (background).
    """
    height, width, _ = background.shape
    frame = background.astype(np.float32) / 255.0
    visible = np.zeros((len(layers), height, width), dtype=np.float32)
    for i, (image, (left, top)) in enumerate(layers):
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + image.width, width), min(top + image.height, height)
        if x1 <= x0 or y1 <= y0:
            continue
        rgba = np.asarray(image, dtype=np.float32)[y0 - top : y1 - top, x0 - left : x1 - left] / 255.0
        alpha = rgba[..., 3]
        frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1.0 - alpha[..., None]) + rgba[..., :3]
        visible[:i, y0:y1, x0:x1] *= 1.0 - alpha
        visible[i, y0:y1, x0:x1] = alpha
    owner = np.full((height, width), -1, dtype=np.int8)
    if layers:
        owner = np.where(visible.max(axis=0) > 0.5, visible.argmax(axis=0), -1).astype(np.int8)
    return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), owner
