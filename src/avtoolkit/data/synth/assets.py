"""The system media the generator reads, found offline: soundfont, emoji font, clip art, background photos.

Each finder takes an optional user path and otherwise looks where Debian installs the asset. A missing asset
is a :class:`~avtoolkit.data.errors.DatasetError` that names the package to install and the option to pass a
path.
"""

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFont

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.synth.sounds import find_soundfont

EMOJI_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
)
CLIPART_CANDIDATES = ("/usr/share/openclipart/svg",)
EMOJI_PIXEL_SIZE = 109
"""Noto Color Emoji stores bitmaps (CBDT) for this one size; Pillow renders it at no other."""

BACKGROUND_FILES = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)
"""Photos and textures shipped inside scikit-image's wheel (``skimage/data``; no download needed)."""

_EMOJI_FIX = "install it with `apt-get install fonts-noto-color-emoji`, or pass a colour emoji font with --emoji_font"
_CLIPART_FIX = "install it with `apt-get install openclipart-svg`, or pass the clip-art folder with --clipart_dir"


@dataclass(frozen=True)
class Assets:
    """Resolved paths of the media a dataset is made from.

    Args:
        soundfont: General MIDI soundfont (.sf2/.sf3) that FluidSynth plays.
        emoji_font: Colour emoji font (Noto Color Emoji) the pictures are drawn from.
        clipart_dir: Root of the openclipart SVG collection (pictures of instruments without an emoji).
        backgrounds_dir: Folder holding :data:`BACKGROUND_FILES`.
    """

    soundfont: Path
    emoji_font: Path
    clipart_dir: Path
    backgrounds_dir: Path


def find_assets(
    soundfont: str | Path | None = None,
    emoji_font: str | Path | None = None,
    clipart_dir: str | Path | None = None,
) -> Assets:
    """Resolve every asset: the given paths, else the system's (see the ``find_*`` functions).

    Raises:
        DatasetError: an asset is missing, naming the package to install and the option to pass a path.
    """
    return Assets(
        soundfont=find_soundfont(soundfont).absolute(),
        emoji_font=find_emoji_font(emoji_font).absolute(),
        clipart_dir=find_clipart_dir(clipart_dir).absolute(),
        backgrounds_dir=find_backgrounds_dir(),
    )


def find_emoji_font(path: str | Path | None = None) -> Path:
    """The colour emoji font: ``path`` if given, else Noto Color Emoji where Debian and Fedora install it.

    Raises:
        DatasetError: no font found, or Pillow cannot render it at the bitmap size.
    """
    if path is None:
        found = next((Path(c) for c in EMOJI_FONT_CANDIDATES if os.path.isfile(c)), None)
        if found is None:
            raise DatasetError(
                "no colour emoji font found (looked for " + ", ".join(EMOJI_FONT_CANDIDATES) + "): " + _EMOJI_FIX
            )
    else:
        found = Path(path)
        if not found.is_file():
            raise DatasetError(f"emoji font not found: {found}; {_EMOJI_FIX}")
    try:
        ImageFont.truetype(str(found), EMOJI_PIXEL_SIZE)
    except OSError as err:
        raise DatasetError(
            f"cannot render the emoji font {found} at {EMOJI_PIXEL_SIZE} px ({err}); {_EMOJI_FIX}"
        ) from err
    return found


def missing_emoji(font: Path, emoji: Iterable[str]) -> list[str]:
    """The emoji of ``emoji`` that ``font`` has no colour glyph for (an older font lacks the newer emoji)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(font), lazy=True) as ttf:
        if not any(table in ttf for table in ("CBDT", "COLR", "sbix")):
            return list(emoji)
        cmap = ttf.getBestCmap()
    return [e for e in emoji if any(ord(c) not in cmap for c in e if ord(c) != 0xFE0F)]


def check_emoji(font: Path, emoji: Iterable[str]) -> None:
    """Make sure ``font`` draws every emoji of ``emoji`` in colour.

    Raises:
        DatasetError: naming the missing emoji and how to get a font that has them.
    """
    missing = missing_emoji(font, emoji)
    if missing:
        names = ", ".join(f"{e} (U+{ord(e[0]):04X})" for e in missing)
        raise DatasetError(
            f"the emoji font {font} has no colour glyph for {names}: it is not a colour emoji font or "
            "predates Emoji 15; install a recent Noto Color Emoji (`apt-get install "
            "fonts-noto-color-emoji`), or pass another font with --emoji_font"
        )


def find_clipart_dir(path: str | Path | None = None) -> Path:
    """The openclipart SVG folder: ``path`` if given, else where Debian's ``openclipart-svg`` installs it.

    Raises:
        DatasetError: the folder does not exist.
    """
    if path is None:
        found = next((Path(c) for c in CLIPART_CANDIDATES if os.path.isdir(c)), None)
        if found is None:
            raise DatasetError(f"no clip-art folder found (looked for {', '.join(CLIPART_CANDIDATES)}): {_CLIPART_FIX}")
        return found
    found = Path(path)
    if not found.is_dir():
        raise DatasetError(f"clip-art folder not found: {found}; {_CLIPART_FIX}")
    return found


def check_clipart(folder: Path, files: Iterable[str]) -> None:
    """Make sure every SVG of ``files`` (paths relative to ``folder``) exists.

    Raises:
        DatasetError: naming the missing files and the package that ships them.
    """
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DatasetError(f"clip art missing from {folder}: {', '.join(missing)}; {_CLIPART_FIX}")


def find_backgrounds_dir() -> Path:
    """The folder of scikit-image's bundled sample images (found without importing scikit-image).

    Raises:
        DatasetError: scikit-image is not installed or lacks one of :data:`BACKGROUND_FILES`.
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "scikit-image is not installed; its bundled photos are the backgrounds of the synthetic "
            "datasets: pip install 'avtoolkit[synth]'"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [name for name in BACKGROUND_FILES if not (folder / name).is_file()]
    if missing:
        raise DatasetError(
            f"scikit-image's sample images {', '.join(missing)} are missing from {folder}: reinstall "
            "scikit-image (pip install --force-reinstall scikit-image)"
        )
    return folder
