"""Pictures of sound sources on real backgrounds, composited with exact per-object masks.

Every picture name (what it shows) has depictions from several independent *families*
(:data:`~avtoolkit.data.synth.assets.PICTURE_FAMILIES`): three emoji vendors (Noto Color Emoji, Twemoji,
OpenMoji), openclipart SVGs, and our own procedural drawings (:mod:`avtoolkit.data.synth.drawings`) for the
objects the packages lack; several pictures per family where it has them (:data:`PICTURES`). A sprite is one
picture cropped to its alpha; each clip then varies it (:func:`random_appearance`, :func:`vary`): colour
jitter (hue, saturation, brightness), pose (mirror, rotation), aspect, partial occlusion (a bite cut out of
the object: the background shows through and the mask excludes it) and blur. A backdrop is a crop of a real
photo or texture from scikit-image, colour-jittered and slowly panned. :func:`composite` pastes posed sprites
(scaled, rotated) on a backdrop frame and reports, per pixel, which sprite owns it: the one whose alpha, after
the occlusion by the sprites pasted later, exceeds one half.
"""

import io
import os
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.synth.assets import (
    BACKGROUND_FILES,
    EMOJI_PIXEL_SIZE,
    Assets,
    check_clipart,
    check_emoji,
    check_svg_files,
    emoji_file_name,
    missing_emoji,
)
from avtoolkit.data.synth.drawings import DRAWINGS, VARIANTS, draw
from avtoolkit.utils.imports import lazy_import

SVG_LONGEST_SIDE = 256
"""Clip art is rasterised once at this size (longest side, pixels), then resized for each frame."""

EMOJI_FAMILIES = ("noto", "twemoji", "openmoji")
"""Picture families that draw an emoji (``ref`` is the emoji itself)."""


@dataclass(frozen=True)
class Picture:
    """One depiction: its family and where in the family it is.

    Args:
        family: Key of :data:`~avtoolkit.data.synth.assets.PICTURE_FAMILIES`.
        ref: The emoji itself (noto, twemoji, openmoji), the SVG's path relative to the clip-art folder
            (openclipart), or ``"{drawing}/{variant}"`` (drawn).
    """

    family: str
    ref: str

    @property
    def id(self) -> str:
        """A short printable id for the manifest: family and reference (emoji as code points)."""
        ref = self.ref
        if self.family in EMOJI_FAMILIES:
            ref = "U+" + "-".join(f"{ord(c):04X}" for c in self.ref if ord(c) != 0xFE0F)
        return f"{self.family}:{ref}"


def _emoji(*emoji: str) -> tuple[Picture, ...]:
    return tuple(Picture(family, e) for family in EMOJI_FAMILIES for e in emoji)


def _clipart(*files: str) -> tuple[Picture, ...]:
    return tuple(Picture("openclipart", f if "/" in f else f"recreation/music/{f}") for f in files)


def _drawn(name: str) -> tuple[Picture, ...]:
    return tuple(Picture("drawn", f"{name}/{k}") for k in range(VARIANTS))


PICTURES: dict[str, tuple[Picture, ...]] = {
    "accordion": _emoji("\U0001fa97") + _drawn("accordion"),
    "ambulance": _emoji("\U0001f691"),
    "banjo": _emoji("\U0001fa95") + _drawn("banjo"),
    "bird": _emoji("\U0001f426", "\U0001f99c", "\U0001f424")
    + _clipart(
        "animals/birds/owl_on_branch_ganson.svg",
        "animals/birds/uccello_profilo_01_archi_01.svg",
        "animals/birds/seagull_nicu_buculei_01.svg",
    ),
    "cello": _clipart("cello_ganson.svg", "cello_mo_01.svg", "cello_mo_02.svg") + _drawn("cello"),
    "drum": _emoji("\U0001f941", "\U0001fa98")
    + _clipart("drums_jarno_vasamaa_.svg", "djambf_ganson.svg")
    + _drawn("drum"),
    "flute": _emoji("\U0001fa88") + _clipart("flute_ganson.svg") + _drawn("flute"),
    "french_horn": _clipart("french_horn_ganson.svg") + _drawn("french_horn"),
    "guitar": _emoji("\U0001f3b8")
    + _clipart("guitar_ganson.svg", "guitar_jarno_vasamaa1.svg", "guitar_jarno_vasamaa2.svg")
    + _drawn("guitar"),
    "harp": _clipart("harp1_ganson.svg", "harp2_ganson.svg", "harp3_ganson.svg", "harp_mo_01.svg") + _drawn("harp"),
    "helicopter": _emoji("\U0001f681"),
    "oboe": _clipart("oboe_ganson.svg") + _drawn("oboe"),
    "piano": _emoji("\U0001f3b9") + _clipart("computer/icons/flat-theme/action/piano.svg"),
    "pistol": _emoji("\U0001f52b")
    + _clipart("tools/weapons/9_mm_gun_01.svg", "tools/weapons/blue_gun_alex_fernandez_01.svg"),
    "saxophone": _emoji("\U0001f3b7") + _clipart("saxophone_jarno_vasamaa_.svg"),
    "trumpet": _emoji("\U0001f3ba")
    + _clipart("trumpet_b_flat__ganson.svg", "trumpet_b_flat_colour_ganso.svg", "trumpet_pocket_colour_ganso.svg"),
    "violin": _emoji("\U0001f3bb")
    + _clipart("violin_ganson.svg", "violin_colour_ganson.svg", "violin_mo_01.svg")
    + _drawn("violin"),
    "xylophone": _clipart("xylophone_ganson.svg") + _drawn("xylophone"),
}
"""Every picture name the datasets use (what it shows) with its depictions, all families together."""


def pictures_of(name: str, families: tuple[str, ...] | list[str]) -> list[Picture]:
    """The depictions of ``name`` in ``families``."""
    return [p for p in PICTURES[name] if p.family in families]


PICTOGRAPH_BLOCKS = ((0x1F300, 0x1F5FF), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF))
"""Unicode blocks of pictographs (nature, food, objects, transport, animals, people): the generic emoji's source."""

NOT_A_THING = ("SIGN", "SYMBOL", "BUTTON", "SQUARED", "ARROW", "CLOCK", "CIRCLE", "SQUARE", "HEART", "MARK", "FLAG")
"""Words of the Unicode names of pictographs that are signs or geometric marks rather than things."""


@cache
def generic_emoji(assets: Assets) -> tuple[str, ...]:
    """Emoji of things other than the datasets' objects that every emoji family in use draws.

    Single code points of :data:`PICTOGRAPH_BLOCKS` (skin-tone modifiers and names with a word of
    :data:`NOT_A_THING` left out), without the emoji of :data:`PICTURES`: about 900 with the pinned packages.
    Pictures of many other things, each by several artists, teach a backbone what changes with the artist and
    what with the object.
    """
    used = {p.ref for pictures in PICTURES.values() for p in pictures if p.family in EMOJI_FAMILIES}
    candidates = [
        chr(point)
        for first, last in PICTOGRAPH_BLOCKS
        for point in range(first, last + 1)
        if not 0x1F3FB <= point <= 0x1F3FF  # skin-tone modifiers
        and (name := unicodedata.name(chr(point), ""))
        and not any(word in name for word in NOT_A_THING)
        and chr(point) not in used
    ]
    for family in (f for f in EMOJI_FAMILIES if f in assets.picture_families):
        if family == "noto":
            missing = set(missing_emoji(assets.emoji_font, candidates))
            candidates = [e for e in candidates if e not in missing]
        else:
            files = set(os.listdir(assets.folder_of(family)))
            candidates = [e for e in candidates if emoji_file_name(family, e) in files]
    return tuple(candidates)


class Pose(NamedTuple):
    """How a sprite is drawn in one frame: centre (pixels), longest side (pixels), angle (degrees)."""

    x: float
    y: float
    longest: float
    angle: float


def check_pictures(names: list[str], assets: Assets) -> None:
    """Make sure every depiction of ``names`` in the families in use can be drawn (fails early, before any work).

    Raises:
        DatasetError: a glyph or SVG file is missing, naming the package to install.
    """
    pictures = [p for name in names for p in pictures_of(name, assets.picture_families)]
    check_emoji(assets.emoji_font, sorted({p.ref for p in pictures if p.family == "noto"}))
    check_clipart(assets.clipart_dir, sorted({p.ref for p in pictures if p.family == "openclipart"}))
    for family in ("twemoji", "openmoji"):
        files = sorted({emoji_file_name(family, p.ref) for p in pictures if p.family == family})
        if files:
            check_svg_files(family, assets.folder_of(family), files)


@cache
def sprite(picture: Picture, assets: Assets) -> Image.Image:
    """The depiction ``picture`` cropped to its alpha, premultiplied ("RGBa"); cached per process."""
    if picture.family == "noto":
        image = _render_emoji(picture.ref, assets.emoji_font)
    elif picture.family in ("twemoji", "openmoji"):
        image = _render_svg(assets.folder_of(picture.family) / emoji_file_name(picture.family, picture.ref))
    elif picture.family == "openclipart":
        image = _render_svg(assets.clipart_dir / picture.ref)
    elif picture.family == "drawn":
        name, variant = picture.ref.split("/")
        if name not in DRAWINGS:
            raise DatasetError(f"no procedural drawing of {name!r}")
        image = draw(name, int(variant), SVG_LONGEST_SIDE)
    else:
        raise DatasetError(f"unknown picture family {picture.family!r}")
    box = image.getchannel("A").getbbox()
    if box is None:
        raise DatasetError(f"the picture {picture.id} renders empty; check the emoji font/clip art")
    return image.crop(box).convert("RGBa")


WORKING_SIDE = 192
"""Clips vary a sprite at most this large (longest side, pixels): above the largest an object is drawn."""


@cache
def working_sprite(picture: Picture, assets: Assets) -> Image.Image:
    """:func:`sprite` shrunk to :data:`WORKING_SIDE` at most (varying a smaller image is faster); cached."""
    image = sprite(picture, assets)
    return resized(image, WORKING_SIDE) if max(image.size) > WORKING_SIDE else image


@dataclass(frozen=True)
class Appearance:
    """How one clip shows a sprite (see :func:`vary`).

    Args:
        hue: Hue rotation (fraction of a turn).
        saturation: Saturation factor.
        brightness: Brightness factor.
        mirror: Flip left-right.
        angle: Rotation (degrees, counter-clockwise), on top of the motion's.
        aspect: Width stretch over height stretch.
        bite: Occlusion: ``(x, y, radius)`` of a disc cut out of the sprite, as fractions of its width, height
            and shorter side; None for no occlusion.
        blur: Gaussian blur radius as a fraction of the sprite's longest side (0 = sharp).
    """

    hue: float = 0.0
    saturation: float = 1.0
    brightness: float = 1.0
    mirror: bool = False
    angle: float = 0.0
    aspect: float = 1.0
    bite: tuple[float, float, float] | None = None
    blur: float = 0.0


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A random per-clip appearance: mild colour jitter always, the other variations often."""
    bite = None
    if rng.random() < 0.35:
        bite = (float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.15, 0.3)))
    return Appearance(
        hue=float(rng.uniform(-0.06, 0.06)),
        saturation=float(rng.uniform(0.7, 1.3)),
        brightness=float(rng.uniform(0.75, 1.15)),
        mirror=bool(rng.random() < 0.5),
        angle=float(rng.uniform(-20.0, 20.0)),
        aspect=float(np.exp(rng.uniform(-0.15, 0.15))),
        bite=bite,
        blur=float(rng.uniform(0.002, 0.01)) if rng.random() < 0.5 else 0.0,
    )


def vary(image: Image.Image, look: Appearance) -> Image.Image:
    """``image`` ("RGBa" sprite) as ``look`` shows it, cropped to its alpha again ("RGBa")."""
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    if look.hue or look.saturation != 1.0 or look.brightness != 1.0:
        hsv = np.asarray(rgba.convert("RGB").convert("HSV"), dtype=np.float32)
        hsv[..., 0] = (hsv[..., 0] + look.hue * 256.0) % 256.0
        hsv[..., 1] *= look.saturation
        hsv[..., 2] *= look.brightness
        rgb = Image.fromarray(np.clip(hsv + 0.5, 0, 255).astype(np.uint8), "HSV").convert("RGB")
        rgba = Image.merge("RGBA", (*rgb.split(), alpha))
    if look.aspect != 1.0:
        size = (max(1, round(rgba.width * np.sqrt(look.aspect))), max(1, round(rgba.height / np.sqrt(look.aspect))))
        rgba = rgba.resize(size, Image.Resampling.BILINEAR)
    if look.bite is not None:
        x, y, radius = look.bite
        r = radius * min(rgba.size)
        cx, cy = x * rgba.width, y * rgba.height
        cut = Image.new("L", rgba.size, 255)
        ImageDraw.Draw(cut).ellipse((cx - r, cy - r, cx + r, cy + r), fill=0)
        rgba.putalpha(
            Image.fromarray(
                (np.asarray(rgba.getchannel("A"), dtype=np.uint16) * np.asarray(cut) // 255).astype(np.uint8)
            )
        )
    out = rgba.convert("RGBa")
    if look.mirror:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if look.angle:
        out = out.rotate(look.angle, Image.Resampling.BICUBIC, expand=True)
    if look.blur > 0.0:
        pad = int(np.ceil(3 * look.blur * max(out.size))) + 1
        padded = Image.new("RGBa", (out.width + 2 * pad, out.height + 2 * pad))
        padded.paste(out, (pad, pad))
        out = padded.filter(ImageFilter.GaussianBlur(look.blur * max(out.size)))
    box = out.getchannel(3).getbbox()
    return out.crop(box) if box is not None else out


STYLES = ("grayscale", "silhouette", "outline")
"""Other ways to draw a sprite (:func:`redraw`): what an artist of another family might have made of it."""

OUTLINE_WIDTH = 1 / 60
"""Line width of the ``outline`` style, as a fraction of the sprite's longest side."""


def redraw(image: Image.Image, style: str, rng: np.random.Generator) -> Image.Image:
    """``image`` ("RGBa" sprite) drawn in ``style`` of :data:`STYLES` ("RGBa", same size).

    ``grayscale`` keeps the shading without the colours; ``silhouette`` fills the shape with one dark colour;
    ``outline`` is a line drawing: black lines along the colour edges and the contour, white inside.
    """
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    if style == "grayscale":
        gray = rgba.convert("L")
        return Image.merge("RGBA", (gray, gray, gray, alpha)).convert("RGBa")
    solid = alpha.point(lambda a: 255 if a > 127 else 0)
    if style == "silhouette":
        flat = Image.new("RGBA", rgba.size, (*(int(v) for v in rng.integers(0, 90, 3)), 255))
        flat.putalpha(solid)
        return flat.convert("RGBa")
    if style != "outline":
        raise ValueError(f"unknown style {style!r}: one of {', '.join(STYLES)}")
    edges = np.maximum(
        np.asarray(rgba.convert("L").filter(ImageFilter.FIND_EDGES)), np.asarray(solid.filter(ImageFilter.FIND_EDGES))
    )
    width = 2 * round(OUTLINE_WIDTH * max(rgba.size)) + 1
    lines = np.asarray(Image.fromarray((edges > 40).astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(width))) > 0
    rgb = np.where(lines[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)
    shape = np.maximum(np.asarray(solid), lines.astype(np.uint8) * 255)
    return Image.fromarray(np.dstack([rgb, shape]), "RGBA").convert("RGBa")


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
    if image.height > image.width:
        image = render(height=SVG_LONGEST_SIDE)
    # A drawing on a much larger page: render it again larger, so that the drawing itself gets the resolution.
    box = image.getchannel("A").getbbox()
    if box is not None:
        zoom = min(4.0, SVG_LONGEST_SIDE / max(box[2] - box[0], box[3] - box[1]))
        if zoom > 1.25:
            image = render(width=round(image.width * zoom))
    return image


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
