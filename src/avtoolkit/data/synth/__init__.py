"""Offline real-media synthetic audio-visual datasets in the official layouts.

:func:`generate` writes one dataset: ``"music"`` (MUSIC-style separation set), ``"s4"``, ``"ms3"`` (AVSBench
object) or ``"avss"`` (AVSBench-semantic), from FluidSynth sounds, emoji and clip-art pictures, and real
backgrounds; deterministic per seed, written atomically, with a manifest. Pictures and sounds come from several
independent families (emoji vendors, clip art, procedural drawings; General MIDI soundfonts), and ``holdout``
keeps one picture family and one sound family for a held-out test (see :mod:`avtoolkit.data.synth.layouts`).
"""

from avtoolkit.data.holdout import held_out_clips
from avtoolkit.data.synth.assets import PICTURE_FAMILIES, SOUND_FAMILIES
from avtoolkit.data.synth.layouts import (
    AVSS_CLASSES,
    AVSS_PALETTE,
    GENERATOR_VERSION,
    LAYOUTS,
    MUSIC_CATEGORIES,
    SEGMENTATION_CATEGORIES,
    SIZES,
    Holdout,
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
    "PICTURE_FAMILIES",
    "SEGMENTATION_CATEGORIES",
    "SIZES",
    "SOUND_FAMILIES",
    "Category",
    "Holdout",
    "Layout",
    "Size",
    "SynthInterrupted",
    "generate",
    "held_out_clips",
    "plan",
]
