"""Offline real-media synthetic audio-visual datasets in the official layouts.

:func:`generate` writes one dataset: ``"music"`` (MUSIC-style separation set), ``"s4"``, ``"ms3"`` (AVSBench
object) or ``"avss"`` (AVSBench-semantic), from FluidSynth sounds, emoji and clip-art pictures, and real
backgrounds; deterministic per seed, written atomically, with a manifest.
"""

from avtoolkit.data.synth.layouts import (
    AVSS_CLASSES,
    AVSS_PALETTE,
    GENERATOR_VERSION,
    LAYOUTS,
    MUSIC_CATEGORIES,
    SEGMENTATION_CATEGORIES,
    SIZES,
    Layout,
    Size,
    SynthInterrupted,
    generate,
    plan,
)
from avtoolkit.data.synth.scenes import Category

__all__ = [
    "AVSS_CLASSES",
    "AVSS_PALETTE",
    "GENERATOR_VERSION",
    "LAYOUTS",
    "MUSIC_CATEGORIES",
    "SEGMENTATION_CATEGORIES",
    "SIZES",
    "Category",
    "Layout",
    "Size",
    "SynthInterrupted",
    "generate",
    "plan",
]
