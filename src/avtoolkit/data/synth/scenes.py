"""Clips: which objects a clip shows, where they move, and what it sounds like.

A segmentation scene shows 1–4 objects on a real backdrop; each object is a :class:`Category` (a sound
voice and a picture name) shown by one depiction (a :class:`~avtoolkit.data.synth.pictures.Picture` of some
picture family) varied per clip (colour, pose, aspect, occlusion, blur), and either sounding, played by one
sound family's soundfont with a per-clip timbre variation, or silent. Objects are placed so that they overlap
little over the whole clip, and move slightly (drift, sway, breathing); the audio is the sum of the sounding objects'
sounds only. A solo scene (separation) shows one instrument, large, drifting and bobbing gently, breathing
with its loudness. A still scene (visual encoder pre-training) is one silent, motionless frame of objects.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.synth.assets import Assets
from avtoolkit.data.synth.pictures import (
    STYLES,
    Backdrop,
    Picture,
    Pose,
    backdrop,
    composite,
    pictures_of,
    posed,
    posed_size,
    random_appearance,
    redraw,
    resized,
    vary,
    working_sprite,
)
from avtoolkit.data.synth.sounds import random_timbre, render_clip

FRAME_SIZE = 224
MAX_OVERLAP = 0.2
"""At most this fraction of the smaller of two objects' boxes (swept over the clip) may overlap the other."""

_LONGEST_SIDE = {1: (105.0, 150.0), 2: (90.0, 135.0), 3: (80.0, 120.0), 4: (70.0, 105.0)}
"""Range of an object's longest side (pixels) by the number of objects in the frame."""

Box = tuple[int, int, int, int]
"""``(left, top, right, bottom)`` in pixels."""


@dataclass(frozen=True)
class Category:
    """A kind of sound source: its name in a dataset, how it sounds, what it looks like.

    Args:
        name: Name written in the dataset (a MUSIC class, an S4 category).
        voice: Key of :data:`avtoolkit.data.synth.sounds.VOICES`.
        picture: Key of :data:`avtoolkit.data.synth.pictures.PICTURES` (the picture name: what it shows).
        avss: AVSBench-semantic class name ("" where a dataset has no semantic labels).
    """

    name: str
    voice: str
    picture: str
    avss: str = ""


@dataclass(frozen=True)
class SceneObject:
    """An object in a scene: what it is, whether it is heard, its depiction and its sound family.

    Args:
        category: What it is.
        sounding: Whether it is heard.
        picture: The depiction drawn.
        sound: The sound family that plays it ("" when silent).
    """

    category: Category
    sounding: bool
    picture: Picture
    sound: str = ""


def default_picture(category: Category, assets: Assets) -> Picture:
    """The first depiction of ``category`` among the picture families in use."""
    found = pictures_of(category.picture, assets.picture_families)
    if not found:
        raise DatasetError(
            f"no picture of {category.picture!r} in the picture families {', '.join(assets.picture_families)}"
        )
    return found[0]


def _sprite(obj: SceneObject, rng: np.random.Generator, assets: Assets) -> Image.Image:
    """The object's depiction as this clip shows it (a random appearance)."""
    return vary(working_sprite(obj.picture, assets), random_appearance(rng))


@dataclass(frozen=True)
class Scene:
    """A rendered clip.

    Args:
        objects: The objects from back to front; the owner maps hold indices into this list.
        frames: (H, W, 3) uint8 RGB per frame.
        owners: (H, W) int8 per frame: the object each pixel shows, -1 for the background.
        boxes: Per object, per frame, the box its sprite was pasted in (including transparent corners).
        audio: Mono float32 waveform.
    """

    objects: list[SceneObject]
    frames: list[np.ndarray]
    owners: list[np.ndarray]
    boxes: list[list[Box]]
    audio: np.ndarray

    def mask(self, frame: int) -> np.ndarray:
        """(H, W) bool: the pixels of the sounding objects in ``frame``."""
        sounding = [i for i, o in enumerate(self.objects) if o.sounding]
        return np.isin(self.owners[frame], sounding)

    def labels(self, frame: int, class_index: Callable[[Category], int]) -> np.ndarray:
        """(H, W) uint8 semantic map of ``frame``: ``class_index`` of the sounding objects, 0 elsewhere."""
        lookup = np.zeros(len(self.objects) + 1, dtype=np.uint8)  # lookup[-1] is the background
        for i, o in enumerate(self.objects):
            if o.sounding:
                lookup[i] = class_index(o.category)
        return lookup[self.owners[frame]]


@dataclass(frozen=True)
class Track:
    """How an object moves through a clip (``t`` from 0 to 1): a straight drift, a sway and a breathing scale.

    Args:
        center: Centre at ``t = 0`` (pixels).
        drift: Displacement by ``t = 1`` (pixels).
        longest: Longest side (pixels).
        angle: Mean rotation (degrees).
        sway: Amplitude of the rotation's oscillation (degrees).
        breathe: Relative amplitude of the scale's oscillation.
        phase: Phase of both oscillations (cycles); one cycle per clip.
    """

    center: tuple[float, float]
    drift: tuple[float, float]
    longest: float
    angle: float
    sway: float
    breathe: float
    phase: float

    def pose(self, t: float) -> Pose:
        """The pose at time ``t`` ∈ [0, 1]."""
        wave = float(np.sin(2 * np.pi * (t + self.phase)))
        return Pose(
            self.center[0] + self.drift[0] * t,
            self.center[1] + self.drift[1] * t,
            self.longest * (1.0 + self.breathe * wave),
            self.angle + self.sway * wave,
        )

    def moved(self, dx: float, dy: float) -> "Track":
        """The same track shifted by ``(dx, dy)``."""
        return Track(
            (self.center[0] + dx, self.center[1] + dy),
            self.drift,
            self.longest,
            self.angle,
            self.sway,
            self.breathe,
            self.phase,
        )


def segmentation_scene(
    sounding: tuple[Category, ...],
    silent: tuple[Category, ...],
    n_frames: int,
    duration: float,
    sample_rate: int,
    rng: np.random.Generator,
    assets: Assets,
    pictures: tuple[Picture, ...] | None = None,
    sounds: tuple[str, ...] | None = None,
) -> Scene:
    """Render a clip showing ``sounding`` and ``silent`` objects in random depth order; ``sounding`` is heard.

    Args:
        sounding: Categories shown and heard.
        silent: Categories shown but silent (distractors).
        n_frames: Frames spread evenly over the clip.
        duration: Seconds of audio.
        sample_rate: Hz.
        rng: The clip's random generator.
        assets: Where the media come from.
        pictures: The depiction of each object of ``sounding + silent`` (default: each one's first).
        sounds: The sound family of each object of ``sounding`` (default: the first in use).
    """
    pictures = pictures or tuple(default_picture(c, assets) for c in sounding + silent)
    sounds = sounds or (assets.sound_families[0],) * len(sounding)
    objects = [SceneObject(c, True, p, f) for c, p, f in zip(sounding, pictures[: len(sounding)], sounds, strict=True)]
    objects += [SceneObject(c, False, p) for c, p in zip(silent, pictures[len(sounding) :], strict=True)]
    objects = [objects[i] for i in rng.permutation(len(objects))]
    images = [_sprite(o, rng, assets) for o in objects]
    times = _times(n_frames)
    tracks = place([image.size for image in images], times, rng)
    poses = [[track.pose(t) for t in times] for track in tracks]
    frames, owners, boxes = render(backdrop(rng, assets.backgrounds_dir, FRAME_SIZE), images, poses, times)
    voices = [(o.category.voice, o.sound) for o in objects if o.sounding]
    return Scene(objects, frames, owners, boxes, mix(voices, duration, sample_rate, rng, assets))


def still_scene(
    pictures: list[Picture], rng: np.random.Generator, assets: Assets, restyle: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """One frame showing ``pictures`` (back to front), without motion or sound.

    Each gets a random appearance and, with probability ``restyle``, is first drawn in a random style of
    :data:`~avtoolkit.data.synth.pictures.STYLES`; all are placed, posed and composited like a segmentation
    scene's first frame.

    Returns:
        The (H, W, 3) uint8 frame and its (H, W) int8 owner map (index into ``pictures``, -1 for background).
    """
    images = []
    for picture in pictures:
        image = working_sprite(picture, assets)
        if rng.random() < restyle:
            image = redraw(image, STYLES[int(rng.integers(len(STYLES)))], rng)
        images.append(vary(image, random_appearance(rng)))
    tracks = place([image.size for image in images], [0.0], rng)
    frames, owners, _ = render(
        backdrop(rng, assets.backgrounds_dir, FRAME_SIZE), images, [[track.pose(0.0)] for track in tracks], [0.0]
    )
    return frames[0], owners[0]


def solo_scene(
    category: Category,
    duration: float,
    fps: float,
    sample_rate: int,
    rng: np.random.Generator,
    assets: Assets,
    picture: Picture | None = None,
    sound: str | None = None,
) -> Scene:
    """Render a clip of one instrument playing: large, drifting slowly, bobbing, breathing with its loudness.

    Args:
        category: The instrument.
        duration: Seconds.
        fps: Frames per second.
        sample_rate: Hz.
        rng: The clip's random generator.
        assets: Where the media come from.
        picture: Its depiction (default: its first).
        sound: The sound family that plays it (default: the first in use).
    """
    obj = SceneObject(category, True, picture or default_picture(category, assets), sound or assets.sound_families[0])
    audio = render_clip(
        category.voice, duration, sample_rate, rng, assets.soundfont_of(obj.sound), timbre=random_timbre(rng)
    )
    n_frames = round(duration * fps)
    image = _sprite(obj, rng, assets)
    poses = _inside(_solo_poses(loudness(audio, n_frames), fps, rng), image.size)
    times = _times(n_frames)
    # The instrument in focus before a soft background (which also keeps the JPEG frames small).
    back = backdrop(rng, assets.backgrounds_dir, FRAME_SIZE, defocus=(1.0, 2.0))
    frames, owners, boxes = render(back, [image], [poses], times)
    return Scene([obj], frames, owners, boxes, audio)


def place(sizes: list[tuple[int, int]], times: list[float], rng: np.random.Generator) -> list[Track]:
    """Tracks for sprites of ``sizes`` that stay inside the frame and overlap little (:data:`MAX_OVERLAP`).

    Tries random layouts; after a failed try the objects get 10 % smaller.
    """
    low, high = _LONGEST_SIDE[len(sizes)]
    shrink = 1.0
    while True:
        tracks = _try_place(sizes, times, low * shrink, high * shrink, rng)
        if tracks is not None:
            return tracks
        shrink *= 0.9


def _try_place(
    sizes: list[tuple[int, int]], times: list[float], low: float, high: float, rng: np.random.Generator
) -> list[Track] | None:
    tracks: list[Track] = []
    boxes: list[tuple[float, float, float, float]] = []
    for size in sizes:
        for _attempt in range(50):
            track = _random_track(size, times, float(rng.uniform(low, high)), rng)
            if track is None:
                continue
            box = _swept_box(track, size, times)
            if all(_overlap(box, other) <= MAX_OVERLAP for other in boxes):
                tracks.append(track)
                boxes.append(box)
                break
        else:
            return None
    return tracks


def _random_track(size: tuple[int, int], times: list[float], longest: float, rng: np.random.Generator) -> Track | None:
    """A track with random motion whose swept box fits in the frame, or None when it cannot fit."""
    direction, distance = rng.uniform(0.0, 2 * np.pi), rng.uniform(4.0, 16.0)
    track = Track(
        center=(0.0, 0.0),
        drift=(float(distance * np.cos(direction)), float(distance * np.sin(direction))),
        longest=longest,
        angle=float(rng.uniform(-15.0, 15.0)),
        sway=float(rng.uniform(0.0, 4.0)),
        breathe=float(rng.uniform(0.0, 0.05)),
        phase=float(rng.uniform(0.0, 1.0)),
    )
    x0, y0, x1, y1 = _swept_box(track, size, times)
    if x1 - x0 > FRAME_SIZE or y1 - y0 > FRAME_SIZE:
        return None
    return track.moved(float(rng.uniform(-x0, FRAME_SIZE - x1)), float(rng.uniform(-y0, FRAME_SIZE - y1)))


def _swept_box(track: Track, size: tuple[int, int], times: list[float]) -> tuple[float, float, float, float]:
    """The box covering the object at every frame (plus a pixel of rounding margin)."""
    x0, y0, x1, y1 = _box_of([track.pose(t) for t in times], size)
    return x0 - 1, y0 - 1, x1 + 1, y1 + 1


def _box_of(poses: list[Pose], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The box covering a sprite of ``size`` drawn in every pose of ``poses``."""
    boxes = []
    for pose in poses:
        width, height = posed_size(size, pose)
        boxes.append((pose.x - width / 2, pose.y - height / 2, pose.x + width / 2, pose.y + height / 2))
    x0, y0, x1, y1 = np.array(boxes).T
    return float(x0.min()), float(y0.min()), float(x1.max()), float(y1.max())


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection area over the smaller box's area."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller


def _solo_poses(loud: np.ndarray, fps: float, rng: np.random.Generator) -> list[Pose]:
    """A slow drift (periods 4–8 s), a bob (0.6–1.2 s), a sway, and a scale that swells with the loudness."""
    n = len(loud)
    seconds = np.arange(n) / fps
    longest = rng.uniform(130.0, 175.0)
    center = FRAME_SIZE / 2 + rng.uniform(-10.0, 10.0, size=2)
    drift = rng.uniform(3.0, 8.0, size=2)
    drift_period = rng.uniform(4.0, 8.0, size=2)
    bob, bob_period = rng.uniform(1.5, 3.0), rng.uniform(0.6, 1.2)
    angle, sway, sway_period = rng.uniform(-6.0, 6.0), rng.uniform(1.0, 3.0), rng.uniform(3.0, 6.0)
    phases = rng.uniform(0.0, 2 * np.pi, size=4)
    x = center[0] + drift[0] * np.sin(2 * np.pi * seconds / drift_period[0] + phases[0])
    y = (
        center[1]
        + drift[1] * np.sin(2 * np.pi * seconds / drift_period[1] + phases[1])
        + bob * np.sin(2 * np.pi * seconds / bob_period + phases[2])
    )
    scale = longest * (1.0 + 0.06 * loud)
    rotation = angle + sway * np.sin(2 * np.pi * seconds / sway_period + phases[3])
    return [Pose(float(x[k]), float(y[k]), float(scale[k]), float(rotation[k])) for k in range(n)]


def _inside(poses: list[Pose], size: tuple[int, int]) -> list[Pose]:
    """``poses`` shifted as little as possible so that the sprite stays inside the frame in every pose."""
    x0, y0, x1, y1 = _box_of(poses, size)
    dx, dy = _shift_into(x0, x1), _shift_into(y0, y1)
    return [pose._replace(x=pose.x + dx, y=pose.y + dy) for pose in poses]


def _shift_into(low: float, high: float) -> float:
    """The shift that brings ``[low, high]`` inside ``[0, FRAME_SIZE]`` (or centres it when it is wider)."""
    if high - low > FRAME_SIZE:
        return (FRAME_SIZE - low - high) / 2
    return max(0.0, -low) - max(0.0, high - FRAME_SIZE)


def loudness(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Per-frame loudness in [0, 1]: RMS of each frame's stretch of audio over the loudest one's, smoothed."""
    chunks = np.array_split(audio.astype(np.float64), n_frames)
    rms = np.array([np.sqrt(np.mean(c**2)) if len(c) else 0.0 for c in chunks])
    smooth = np.convolve(np.pad(rms, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    return smooth / smooth.max() if smooth.max() > 0 else smooth


def render(
    back: Backdrop, images: list[Image.Image], poses: list[list[Pose]], times: list[float]
) -> tuple[list[np.ndarray], list[np.ndarray], list[list[Box]]]:
    """Draw every frame: the backdrop at each time, then each sprite (back to front) in its pose.

    Returns:
        Frames, owner maps (see :func:`~avtoolkit.data.synth.pictures.composite`), and per object the boxes
        its sprite was pasted in.
    """
    # Resize each sprite once to its largest size in the clip: each frame only rotates and shrinks it a bit.
    images = [resized(image, max(pose.longest for pose in track)) for image, track in zip(images, poses, strict=True)]
    frames, owners = [], []
    boxes: list[list[Box]] = [[] for _ in images]
    for k, t in enumerate(times):
        layers = []
        for i, image in enumerate(images):
            pose = poses[i][k]
            drawn = posed(image, pose.longest, pose.angle)
            left, top = round(pose.x - drawn.width / 2), round(pose.y - drawn.height / 2)
            layers.append((drawn, (left, top)))
            boxes[i].append((left, top, left + drawn.width, top + drawn.height))
        frame, owner = composite(back.frame(t), layers)
        frames.append(frame)
        owners.append(owner)
    return frames, owners, boxes


def mix(
    voices: list[tuple[str, str]], duration: float, sample_rate: int, rng: np.random.Generator, assets: Assets
) -> np.ndarray:
    """The sum of a new melody per ``(voice, sound family)``, each with a random timbre at -20 dBFS RMS.

    Scaled down only if it would clip.
    """
    total = np.zeros(round(duration * sample_rate), dtype=np.float32)
    for voice, family in voices:
        timbre = random_timbre(rng)
        total += render_clip(voice, duration, sample_rate, rng, assets.soundfont_of(family), timbre=timbre)
    peak = float(np.abs(total).max())
    return total * np.float32(0.99 / peak) if peak > 0.99 else total


def _times(n_frames: int) -> list[float]:
    """Times in [0, 1] of ``n_frames`` evenly spread frames (the first at 0, the last at 1)."""
    return [k / max(n_frames - 1, 1) for k in range(n_frames)]
