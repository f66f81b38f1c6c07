"""The ``drawn`` picture family: instruments drawn procedurally with Pillow (our own code, no outside art).

Some objects have no emoji and little clip art (cello, French horn, harp, oboe, xylophone); these simple
drawings give them a depiction family of their own, and give the others a style no package shares. Each
drawing has :data:`VARIANTS` variants (palette and proportions drawn from a fixed seed per variant), drawn
flat-shaded with dark outlines, supersampled for smooth edges, on a transparent canvas.
"""

import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

VARIANTS = 3
"""Variants of each drawing (different palettes and proportions)."""

_SUPERSAMPLE = 3
Colour = tuple[int, int, int]

_WOODS: list[Colour] = [(150, 75, 25), (190, 110, 40), (110, 50, 20), (205, 140, 70), (130, 40, 30)]
_BRASS: list[Colour] = [(220, 170, 50), (200, 150, 60), (235, 195, 90), (190, 160, 120)]
_METALS: list[Colour] = [(200, 205, 215), (175, 180, 190), (225, 215, 180)]
_BRIGHTS: list[Colour] = [(200, 40, 40), (40, 90, 200), (30, 150, 70), (230, 170, 0), (140, 50, 160), (20, 20, 20)]
_DARK: Colour = (30, 20, 15)


def _pick(rng: np.random.Generator, colours: list[Colour]) -> Colour:
    return colours[int(rng.integers(len(colours)))]


def _shade(colour: Colour, factor: float) -> Colour:
    r, g, b = (int(np.clip(c * factor, 0, 255)) for c in colour)
    return r, g, b


class _Pen:
    """Draws in unit coordinates (0..1 across the canvas) with outlines scaled to the canvas."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.image = Image.new("RGBA", (size, size))
        self.draw = ImageDraw.Draw(self.image)

    def _xy(self, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x * self.size, y * self.size) for x, y in points]

    def _w(self, width: float) -> int:
        return max(1, round(width * self.size))

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Colour, outline: float = 0.008) -> None:
        box = self._xy([(cx - rx, cy - ry), (cx + rx, cy + ry)])
        self.draw.ellipse(box, fill=fill, outline=_DARK, width=self._w(outline) if outline else 0)

    def polygon(self, points: list[tuple[float, float]], fill: Colour, outline: float = 0.008) -> None:
        self.draw.polygon(self._xy(points), fill=fill, outline=_DARK, width=self._w(outline) if outline else 0)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Colour, outline: float = 0.008) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill, outline)

    def line(self, points: list[tuple[float, float]], colour: Colour, width: float) -> None:
        self.draw.line(self._xy(points), fill=colour, width=self._w(width), joint="curve")

    def arc(self, cx: float, cy: float, r: float, start: float, end: float, colour: Colour, width: float) -> None:
        box = self._xy([(cx - r, cy - r), (cx + r, cy + r)])
        self.draw.arc(box, start, end, fill=colour, width=self._w(width))


def _bowed(pen: _Pen, rng: np.random.Generator, cello: bool) -> None:
    """Violin or cello: two bouts and a waist, f-holes, fingerboard, scroll, bridge, strings (and endpin)."""
    wood = _pick(rng, _WOODS)
    top = 0.04
    neck = rng.uniform(0.27, 0.32) if not cello else rng.uniform(0.22, 0.26)
    body_top, body_bottom = top + neck, 0.9 if cello else 0.96
    width = (0.34 if cello else 0.3) * rng.uniform(0.92, 1.08)
    height = body_bottom - body_top
    upper_y, lower_y = body_top + 0.25 * height, body_top + 0.72 * height
    pen.ellipse(0.5, upper_y, 0.8 * width / 2, 0.27 * height, wood)
    pen.ellipse(0.5, lower_y, width / 2, 0.29 * height, wood)
    pen.rect(0.5 - 0.28 * width, upper_y, 0.5 + 0.28 * width, lower_y, wood, outline=0)
    for side in (-1, 1):  # C-bouts
        pen.arc(0.5 + side * 0.42 * width, 0.5 * (upper_y + lower_y), 0.09 * height, 0, 360, _shade(wood, 0.6), 0.008)
    pen.ellipse(0.5, lower_y, width / 2 - 0.02, 0.29 * height - 0.02, _shade(wood, 1.15), outline=0)
    pen.ellipse(0.5, upper_y, 0.8 * width / 2 - 0.02, 0.27 * height - 0.02, _shade(wood, 1.15), outline=0)
    pen.rect(0.5 - 0.28 * width + 0.01, upper_y, 0.5 + 0.28 * width - 0.01, lower_y, _shade(wood, 1.15), outline=0)
    for side in (-1, 1):  # f-holes
        x = 0.5 + side * 0.2 * width
        pen.line([(x, 0.45 * (upper_y + lower_y) + 0.02), (x - side * 0.01, 0.55 * (upper_y + lower_y))], _DARK, 0.012)
    pen.rect(0.475, top + 0.04, 0.525, lower_y - 0.02, (25, 20, 20))  # fingerboard
    pen.ellipse(0.5, top + 0.03, 0.035, 0.035, wood)  # scroll
    pen.rect(
        0.5 - 0.15 * width,
        0.5 * (upper_y + lower_y) + 0.06,
        0.5 + 0.15 * width,
        0.5 * (upper_y + lower_y) + 0.075,
        (230, 210, 170),
    )
    pen.polygon(
        [(0.46, lower_y + 0.1), (0.54, lower_y + 0.1), (0.52, body_bottom - 0.02), (0.48, body_bottom - 0.02)],
        (25, 20, 20),
    )
    for dx in (-0.015, -0.005, 0.005, 0.015):
        pen.line([(0.5 + dx, top + 0.06), (0.5 + dx, lower_y + 0.1)], (235, 235, 225), 0.003)
    if cello:
        pen.line([(0.5, body_bottom), (0.5, 0.99)], (90, 90, 95), 0.012)


def _violin(pen: _Pen, rng: np.random.Generator) -> None:
    _bowed(pen, rng, cello=False)


def _cello(pen: _Pen, rng: np.random.Generator) -> None:
    _bowed(pen, rng, cello=True)


def _guitar(pen: _Pen, rng: np.random.Generator) -> None:
    """Acoustic guitar: two round bouts, sound hole, long neck, headstock, bridge, strings."""
    wood = _pick(rng, [*_WOODS, (230, 190, 120), (200, 40, 30)])
    r_low, r_up = 0.2 * rng.uniform(0.92, 1.05), 0.155 * rng.uniform(0.92, 1.05)
    pen.ellipse(0.5, 0.55, r_up, r_up, wood)
    pen.ellipse(0.5, 0.77, r_low, r_low, wood)
    pen.ellipse(0.5, 0.55, r_up - 0.012, r_up - 0.012, _shade(wood, 1.12), outline=0)
    pen.ellipse(0.5, 0.77, r_low - 0.012, r_low - 0.012, _shade(wood, 1.12), outline=0)
    pen.ellipse(0.5, 0.6, 0.06, 0.06, _DARK)
    pen.rect(0.475, 0.06, 0.525, 0.58, _shade(_pick(rng, _WOODS), 0.7))
    pen.polygon([(0.46, 0.0), (0.54, 0.0), (0.53, 0.07), (0.47, 0.07)], _shade(wood, 0.8))
    pen.rect(0.44, 0.8, 0.56, 0.83, _DARK)
    for dx in np.linspace(-0.018, 0.018, 6):
        pen.line([(0.5 + dx, 0.03), (0.5 + dx, 0.815)], (235, 235, 225), 0.0025)


def _banjo(pen: _Pen, rng: np.random.Generator) -> None:
    """Banjo: a round drum head in a metal rim, a long thin neck with a headstock."""
    rim = _pick(rng, [*_METALS, _pick(rng, _WOODS)])
    r = 0.2 * rng.uniform(0.9, 1.1)
    pen.rect(0.48, 0.02, 0.52, 0.72, _shade(_pick(rng, _WOODS), 0.8))
    pen.polygon([(0.465, 0.0), (0.535, 0.0), (0.525, 0.07), (0.475, 0.07)], _shade(_pick(rng, _WOODS), 0.7))
    pen.ellipse(0.5, 0.76, r, r, rim, outline=0.012)
    pen.ellipse(0.5, 0.76, r - 0.025, r - 0.025, (240, 235, 220))
    for angle in np.linspace(0, 2 * np.pi, 16, endpoint=False):
        pen.ellipse(
            0.5 + (r - 0.012) * np.cos(angle), 0.76 + (r - 0.012) * np.sin(angle), 0.008, 0.008, (90, 90, 95), 0
        )
    pen.rect(0.46, 0.82, 0.54, 0.835, _DARK)
    for dx in np.linspace(-0.012, 0.012, 5):
        pen.line([(0.5 + dx, 0.03), (0.5 + dx, 0.83)], (220, 220, 220), 0.0025)


def _tube(pen: _Pen, rng: np.random.Generator, oboe: bool) -> None:
    """Flute (straight metal tube, embouchure plate) or oboe (dark tapered wood, flared bell), with keys."""
    body = _pick(rng, [(30, 25, 25), (60, 35, 25), (20, 20, 30)]) if oboe else _pick(rng, _METALS)
    keys = _pick(rng, _METALS) if oboe else _shade(body, 0.75)
    length = rng.uniform(0.85, 0.95)
    top, bottom = 0.5 - length / 2, 0.5 + length / 2
    if oboe:
        pen.polygon([(0.485, top), (0.515, top), (0.53, bottom - 0.06), (0.47, bottom - 0.06)], body)
        pen.polygon([(0.47, bottom - 0.07), (0.53, bottom - 0.07), (0.56, bottom), (0.44, bottom)], body)
        pen.rect(0.494, top - 0.03, 0.506, top, (200, 170, 110))  # reed
    else:
        pen.rect(0.482, top, 0.518, bottom, body)
        pen.ellipse(0.5, top + 0.08, 0.02, 0.012, _shade(body, 0.8))
    for k in range(int(rng.integers(6, 9))):
        y = top + 0.2 + k * (length - 0.3) / 8
        pen.ellipse(0.5 + rng.uniform(-0.005, 0.005), y, 0.014, 0.01, keys, 0.004)
        pen.line([(0.5, y), (0.53, y + 0.02)], keys, 0.004)


def _flute(pen: _Pen, rng: np.random.Generator) -> None:
    _tube(pen, rng, oboe=False)


def _oboe(pen: _Pen, rng: np.random.Generator) -> None:
    _tube(pen, rng, oboe=True)


def _french_horn(pen: _Pen, rng: np.random.Generator) -> None:
    """French horn: coiled tubing (concentric loops), a wide flared bell, a lead pipe with a mouthpiece."""
    brass = _pick(rng, _BRASS)
    cx, cy, r = 0.45, 0.45, 0.28 * rng.uniform(0.9, 1.05)
    for k, radius in enumerate((r, r * 0.78, r * 0.56)):
        pen.arc(cx, cy, radius, 0, 360, _DARK, 0.05 - 0.006 * k)
        pen.arc(cx, cy, radius, 0, 360, _shade(brass, 1.0 - 0.08 * k), 0.038 - 0.006 * k)
    pen.polygon([(cx + r * 0.5, cy + r * 0.75), (cx + r * 0.9, cy + r * 0.6), (0.98, 0.98), (0.62, 0.98)], brass)
    pen.ellipse(0.8, 0.97, 0.18, 0.03, _shade(brass, 0.7))
    pen.rect(cx - 0.05, cy - 0.05, cx + 0.05, cy + 0.05, _shade(brass, 0.85))  # valves
    pen.line([(cx - r * 0.3, cy), (0.03, 0.2)], _DARK, 0.024)
    pen.line([(cx - r * 0.3, cy), (0.03, 0.2)], brass, 0.014)
    pen.ellipse(0.03, 0.2, 0.018, 0.018, _pick(rng, _METALS))


def _harp(pen: _Pen, rng: np.random.Generator) -> None:
    """Concert harp: a sound box rising diagonally, a curved neck, a pillar, strings between."""
    wood = _pick(rng, [*_WOODS, (215, 180, 90)])
    lean = rng.uniform(-0.04, 0.04)
    pen.polygon([(0.62, 0.98), (0.74, 0.98), (0.36 + lean, 0.12), (0.3 + lean, 0.14)], wood)
    pen.line([(0.2, 0.2), (0.25, 0.95)], _DARK, 0.05)
    pen.line([(0.2, 0.2), (0.25, 0.95)], _shade(wood, 0.9), 0.035)
    pen.line([(0.15, 0.08), (0.32, 0.12), (0.5, 0.22), (0.7, 0.1), (0.8, 0.06)], _DARK, 0.05)
    pen.line([(0.15, 0.08), (0.32, 0.12), (0.5, 0.22), (0.7, 0.1), (0.8, 0.06)], wood, 0.035)
    pen.rect(0.18, 0.93, 0.78, 0.99, _shade(wood, 0.7))
    neck = [(0.32, 0.12), (0.5, 0.22), (0.7, 0.1)]
    for t in np.linspace(0.05, 0.95, 14):
        x0, y0 = 0.36 + lean + t * (0.68 - 0.36 - lean), 0.13 + t * (0.98 - 0.13)
        xn = 0.27 + t * 0.45
        yn = float(np.interp(xn, [p[0] for p in neck], [p[1] for p in neck]))
        if xn > x0 - 0.01:
            continue
        pen.line([(xn, yn + 0.02), (x0, y0)], (240, 230, 200) if int(t * 14) % 7 else (200, 40, 40), 0.004)


def _xylophone(pen: _Pen, rng: np.random.Generator) -> None:
    """Xylophone: wooden (or coloured) bars shortening left to right on two rails, and two mallets."""
    colourful = bool(rng.random() < 0.5)
    wood = _pick(rng, _WOODS)
    n = int(rng.integers(7, 10))
    width = 0.84 / n
    pen.line([(0.06, 0.3), (0.94, 0.42)], _DARK, 0.02)
    pen.line([(0.06, 0.85), (0.94, 0.72)], _DARK, 0.02)
    for k in range(n):
        x0 = 0.08 + k * width
        half = 0.32 - 0.15 * k / n
        colour = _BRIGHTS[k % len(_BRIGHTS)] if colourful else _shade(wood, rng.uniform(0.9, 1.15))
        pen.rect(x0, 0.57 - half, x0 + 0.85 * width, 0.57 + half, colour, 0.006)
    for x, angle in ((0.3, 0.35), (0.65, -0.3)):
        tip = (x + 0.25 * np.sin(angle), 0.1)
        pen.line([(x, 0.55), tip], (150, 110, 60), 0.012)
        pen.ellipse(tip[0], tip[1], 0.035, 0.035, _pick(rng, _BRIGHTS))


def _drum(pen: _Pen, rng: np.random.Generator) -> None:
    """Snare/bass drum: a cylinder with a pale skin on top, zigzag tension cords, two crossed sticks."""
    shell = _pick(rng, _BRIGHTS + _WOODS)
    rx, ry, top, bottom = 0.36, 0.1, 0.4, 0.85
    pen.rect(0.5 - rx, top, 0.5 + rx, bottom, shell, 0)
    pen.ellipse(0.5, bottom, rx, ry, shell)
    pen.rect(0.5 - rx, top, 0.5 + rx, bottom, shell, 0)
    pen.line([(0.5 - rx, top), (0.5 - rx, bottom)], _DARK, 0.008)
    pen.line([(0.5 + rx, top), (0.5 + rx, bottom)], _DARK, 0.008)
    xs = np.linspace(0.5 - rx + 0.03, 0.5 + rx - 0.03, 8)
    cord = _pick(rng, [*_METALS, (240, 235, 220)])
    pen.line([(x, top + 0.06 if k % 2 == 0 else bottom - 0.04) for k, x in enumerate(xs)], cord, 0.008)
    pen.ellipse(0.5, top, rx, ry, (235, 228, 205))
    for x0, x1 in ((0.15, 0.7), (0.85, 0.3)):
        pen.line([(x0, 0.05), (x1, top - 0.02)], _DARK, 0.026)
        pen.line([(x0, 0.05), (x1, top - 0.02)], (215, 180, 120), 0.016)


def _accordion(pen: _Pen, rng: np.random.Generator) -> None:
    """Piano accordion: pleated bellows between two boxes, a keyboard on one side, buttons on the other."""
    case = _pick(rng, _BRIGHTS)
    pen.rect(0.05, 0.15, 0.3, 0.9, case)
    pen.rect(0.7, 0.15, 0.95, 0.9, case)
    folds = int(rng.integers(7, 11))
    for k in range(folds):
        x0 = 0.3 + k * 0.4 / folds
        pen.polygon(
            [(x0, 0.2), (x0 + 0.4 / folds, 0.17), (x0 + 0.4 / folds, 0.88), (x0, 0.85)],
            (40, 40, 45) if k % 2 else (225, 225, 230),
            0.004,
        )
    for k in range(12):
        y = 0.2 + k * 0.055
        pen.rect(0.08, y, 0.24, y + 0.05, (245, 245, 240), 0.004)
        if k % 7 not in (2, 6):
            pen.rect(0.08, y + 0.035, 0.17, y + 0.065, (20, 20, 20), 0)
    for i in range(4):
        for j in range(8):
            pen.ellipse(0.76 + 0.05 * i, 0.25 + 0.08 * j, 0.016, 0.016, (240, 240, 240), 0.003)


DRAWINGS: dict[str, Callable[[_Pen, np.random.Generator], None]] = {
    "accordion": _accordion,
    "banjo": _banjo,
    "cello": _cello,
    "drum": _drum,
    "flute": _flute,
    "french_horn": _french_horn,
    "guitar": _guitar,
    "harp": _harp,
    "oboe": _oboe,
    "violin": _violin,
    "xylophone": _xylophone,
}
"""Procedural drawings by picture name."""


def draw(name: str, variant: int, size: int) -> Image.Image:
    """Variant ``variant`` of the drawing ``name`` on a transparent ``size``-pixel square ("RGBA")."""
    rng = np.random.default_rng(np.random.SeedSequence([zlib.crc32(name.encode()), variant]))
    pen = _Pen(size * _SUPERSAMPLE)
    DRAWINGS[name](pen, rng)
    return pen.image.resize((size, size), Image.Resampling.LANCZOS)
