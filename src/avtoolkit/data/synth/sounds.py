"""Real instrument sounds: generated melodies rendered by FluidSynth from a General MIDI soundfont.

Each sound category has a :class:`Voice` (General MIDI program, playable range, playing pattern). A melody is a
random walk on a scale inside the voice's range with varied rhythm, tempo and velocity; percussion voices play
rhythms on their kit notes. Each clip may vary the timbre (:class:`Timbre`: the voice's range moved by a few
semitones, legato or staccato articulation, a random spectral tilt and resonance), and is played by one of
several soundfonts (the sound families of :mod:`avtoolkit.data.synth.assets`). Rendering is deterministic for
a given seed and independent of what was rendered before in the same process (the synthesizer is reset and
drained between clips, effects are off).
"""

import ctypes
import os
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from avtoolkit.data.errors import DatasetError

SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf3/default-GM.sf3",
)

Pattern = Literal["melody", "rhythm", "alternate"]


@dataclass(frozen=True)
class Voice:
    """How one sound category is played.

    Args:
        program: General MIDI program (0-based), ignored for percussion.
        low: Lowest MIDI note (melodic voices) or the kit notes to draw from (percussion: ``low..high``).
        high: Highest MIDI note.
        pattern: "melody" (random walk on a scale), "rhythm" (kit notes, percussion), "alternate" (two
            alternating pitches, like a two-tone siren).
        percussion: Play on the General MIDI drum channel.
        vibrato_cents: Depth of a 5.5 Hz pitch vibrato (0 = none).
        beats: Note lengths to draw from, in beats.
    """

    program: int
    low: int
    high: int
    pattern: Pattern = "melody"
    percussion: bool = False
    vibrato_cents: float = 0.0
    beats: tuple[float, ...] = (0.5, 1.0, 1.0, 1.5, 2.0)


# Sound categories. MUSIC-21's instruments where General MIDI has them (erhu ≈ fiddle with vibrato, guzheng ≈
# koto, pipa ≈ shamisen), plus everyday sounds General MIDI ships (bird tweet, telephone, helicopter, ...).
VOICES: dict[str, Voice] = {
    "accordion": Voice(21, 53, 81),
    "acoustic_guitar": Voice(24, 40, 76, beats=(0.5, 0.5, 1.0, 1.0)),
    "bagpipe": Voice(109, 55, 79),
    "banjo": Voice(105, 48, 79, beats=(0.25, 0.5, 0.5, 1.0)),
    "bassoon": Voice(70, 34, 65),
    "cello": Voice(42, 36, 72),
    "clarinet": Voice(71, 50, 89),
    "congas": Voice(0, 62, 64, pattern="rhythm", percussion=True, beats=(0.25, 0.5, 0.5, 1.0)),
    "drum": Voice(0, 35, 46, pattern="rhythm", percussion=True, beats=(0.25, 0.5, 0.5, 1.0)),
    "electric_bass": Voice(33, 28, 55),
    "erhu": Voice(110, 55, 88, vibrato_cents=35.0),
    "flute": Voice(73, 60, 96),
    "guzheng": Voice(107, 48, 84, beats=(0.25, 0.5, 0.5, 1.0)),
    "harp": Voice(46, 36, 91, beats=(0.25, 0.5, 0.5, 1.0)),
    "marimba": Voice(12, 48, 84, beats=(0.25, 0.5, 0.5, 1.0)),
    "piano": Voice(0, 36, 96),
    "pipa": Voice(106, 50, 84, beats=(0.25, 0.5, 0.5, 1.0)),
    "saxophone": Voice(65, 49, 81),
    "trombone": Voice(57, 40, 72),
    "trumpet": Voice(56, 55, 82),
    "tuba": Voice(58, 28, 55),
    "ukulele": Voice(24, 60, 81, beats=(0.25, 0.5, 0.5, 1.0)),
    "violin": Voice(40, 55, 96, vibrato_cents=15.0),
    "xylophone": Voice(13, 65, 96, beats=(0.25, 0.5, 0.5, 1.0)),
    "bird": Voice(123, 70, 96, beats=(0.25, 0.5, 0.5, 1.0)),
    "telephone": Voice(124, 60, 72, pattern="alternate", beats=(1.0, 2.0)),
    "helicopter": Voice(125, 48, 60, beats=(2.0, 3.0, 4.0)),
    "applause": Voice(126, 55, 65, beats=(2.0, 3.0, 4.0)),
    "gun": Voice(127, 48, 72, beats=(0.5, 1.0, 1.0, 2.0)),
    "siren": Voice(81, 64, 71, pattern="alternate", beats=(1.0, 1.0)),
}

_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
}
_DRUM_CHANNEL = 9
_BLOCK = 64  # FluidSynth renders in blocks of 64 samples; we only ever ask for whole blocks


@dataclass(frozen=True)
class Note:
    """A note event in seconds."""

    start: float
    duration: float
    pitch: int
    velocity: int


def find_soundfont(path: str | Path | None = None) -> Path:
    """The soundfont to use: ``path`` if given, else the first General MIDI soundfont Debian installs.

    Raises:
        DatasetError: nothing found, naming the packages to install and the option to pass a path.
    """
    if path is not None:
        found = Path(path)
        if not found.is_file():
            raise DatasetError(
                f"soundfont not found: {found}; pass an existing .sf2/.sf3 file with --soundfont, or leave it "
                "unset to use the system's (`apt-get install fluidr3mono-gm-soundfont`)"
            )
        return found
    for candidate in SOUNDFONT_CANDIDATES:
        if os.path.isfile(candidate):
            return Path(candidate)
    raise DatasetError(
        "no General MIDI soundfont found (looked for " + ", ".join(SOUNDFONT_CANDIDATES) + "). Install one: "
        "`apt-get install fluidr3mono-gm-soundfont` (or fluid-soundfont-gm; `make demo` does this when run as "
        "root), or pass the path of any .sf2/.sf3 General MIDI soundfont with --soundfont."
    )


@dataclass(frozen=True)
class Timbre:
    """How one clip varies a voice's sound.

    Args:
        transpose: Semitones the melodic range moves by (percussion and two-tone voices keep theirs).
        articulation: Range of a note's sounding fraction of its length (low: staccato; near 1: legato).
        tilt_db: Spectral tilt, dB per octave around 1 kHz (negative: darker).
        peak_hz: Centre of a resonance (or notch) of the equaliser.
        peak_db: Its gain (dB; negative for a notch).
    """

    transpose: int = 0
    articulation: tuple[float, float] = (0.65, 1.0)
    tilt_db: float = 0.0
    peak_hz: float = 1000.0
    peak_db: float = 0.0


def random_timbre(rng: np.random.Generator) -> Timbre:
    """A random timbre variation: range ±5 semitones, articulation, tilt ±3 dB/octave, a ±6 dB resonance."""
    low = float(rng.uniform(0.3, 0.8))
    return Timbre(
        transpose=int(rng.integers(-5, 6)),
        articulation=(low, float(min(1.0, low + rng.uniform(0.15, 0.4)))),
        tilt_db=float(rng.uniform(-3.0, 3.0)),
        peak_hz=float(np.exp(rng.uniform(np.log(300.0), np.log(4000.0)))),
        peak_db=float(rng.uniform(-6.0, 6.0)),
    )


def equalise(wave: np.ndarray, sample_rate: int, timbre: Timbre) -> np.ndarray:
    """``wave`` through the timbre's equaliser: a tilt in dB per octave and a one-octave-wide resonance."""
    if not timbre.tilt_db and not timbre.peak_db:
        return wave
    spectrum = np.fft.rfft(wave.astype(np.float64))
    freqs = np.fft.rfftfreq(len(wave), 1.0 / sample_rate)
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)
    gain_db = timbre.tilt_db * octaves
    gain_db += timbre.peak_db * np.exp(-0.5 * (np.log2(np.maximum(freqs, 20.0) / timbre.peak_hz) / 0.5) ** 2)
    return np.fft.irfft(spectrum * 10 ** (gain_db / 20), n=len(wave)).astype(np.float32)


def compose(
    voice: Voice, duration: float, rng: np.random.Generator, articulation: tuple[float, float] = (0.65, 1.0)
) -> list[Note]:
    """Generate the notes of one clip: a random walk on a scale (or a rhythm) filling ``duration`` seconds.

    ``articulation`` is the range of each note's sounding fraction of its length.
    """
    beat = 60.0 / rng.uniform(72.0, 144.0)
    loudness = rng.uniform(70.0, 115.0)
    if voice.pattern == "melody":
        root = int(rng.integers(0, 12))
        steps = _SCALES[str(rng.choice(list(_SCALES)))]
        pitches = [p for p in range(voice.low, voice.high + 1) if (p - root) % 12 in steps]
    else:
        pitches = list(range(voice.low, voice.high + 1))
    position = int(rng.integers(len(pitches) // 4, max(len(pitches) * 3 // 4, 1)))
    notes: list[Note] = []
    t = float(rng.uniform(0.0, 0.25))
    while t < duration:
        length = float(rng.choice(voice.beats)) * beat
        if rng.random() > 0.08:  # occasional rests
            if voice.pattern == "melody":
                step = int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]))
                position = int(np.clip(position + step, 0, len(pitches) - 1))
                pitch = pitches[position]
            elif voice.pattern == "alternate":
                pitch = pitches[-1] if len(notes) % 2 else pitches[0]
            else:
                pitch = pitches[int(rng.integers(0, len(pitches)))]
            velocity = int(np.clip(rng.normal(loudness, 10.0), 30, 127))
            notes.append(Note(t, length * float(rng.uniform(*articulation)), pitch, velocity))
        t += length
    return notes


@cache
def _synth(soundfont: str, sample_rate: int) -> tuple[Any, int]:
    """One FluidSynth instance per process, soundfont and rate (loading a soundfont takes about a second)."""
    try:
        import fluidsynth
    except ImportError as err:
        raise DatasetError(
            "FluidSynth is not available to Python: install the `synth` extra (pip install 'avtoolkit[synth]') "
            "and the FluidSynth library (`apt-get install fluidsynth` on Debian; `make demo` does this as root)."
        ) from err
    settings = {"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.polyphony": 64}
    synth = fluidsynth.Synth(gain=0.6, samplerate=float(sample_rate), **settings)
    sfid = synth.sfload(soundfont)
    if sfid < 0:
        raise DatasetError(f"FluidSynth could not load the soundfont {soundfont}; pass another with --soundfont")
    return synth, sfid


def _write_mono(synth: Any, n: int) -> np.ndarray:
    """``n`` mono float samples straight from FluidSynth's float output.

    (pyfluidsynth's ``get_samples`` goes through the 16-bit path, which adds random dither: not reproducible.)
    """
    import fluidsynth

    left = np.zeros(n, dtype=np.float32)
    right = np.zeros(n, dtype=np.float32)
    status = fluidsynth._fl.fluid_synth_write_float(
        ctypes.c_void_p(synth.synth),
        n,
        left.ctypes.data_as(ctypes.c_void_p),
        0,
        1,
        right.ctypes.data_as(ctypes.c_void_p),
        0,
        1,
    )
    if status != 0:
        raise DatasetError("FluidSynth failed to render audio (fluid_synth_write_float)")
    return (left + right) * 0.5


def render(notes: list[Note], voice: Voice, duration: float, sample_rate: int, soundfont: Path) -> np.ndarray:
    """Render notes with FluidSynth to a mono float32 waveform of exactly ``duration`` seconds.

    The clip is performed twice and the second take kept: FluidSynth initialises some per-sample state on a
    sample's first use, so only a warmed-up take is reproducible whatever was rendered before.
    """
    synth, sfid = _synth(str(soundfont), sample_rate)
    channel = _DRUM_CHANNEL if voice.percussion else 0
    n_total = round(duration * sample_rate)
    n_render = -(-n_total // _BLOCK) * _BLOCK

    def on_grid(seconds: float) -> int:  # events take effect at block boundaries anyway: put them there
        return round(seconds * sample_rate / _BLOCK) * _BLOCK

    events: list[tuple[int, int, int, int]] = []  # (sample, order, pitch, velocity); note-offs first at ties
    for note in notes:
        events.append((on_grid(note.start), 1, note.pitch, note.velocity))
        events.append((on_grid(note.start + note.duration), 0, note.pitch, 0))
    events.sort()
    events.append((n_render, 2, 0, 0))  # sentinel
    block = 4 * _BLOCK if voice.vibrato_cents else n_render
    out = np.zeros(n_render, dtype=np.float32)
    for _take in range(2):
        synth.system_reset()
        synth.program_select(channel, sfid, 128 if voice.percussion else 0, 0 if voice.percussion else voice.program)
        cursor, position = 0, 0
        while cursor < n_render:
            while events[position][0] <= cursor and events[position][1] < 2:
                _, kind, pitch, velocity = events[position]
                if kind == 1:
                    synth.noteon(channel, pitch, velocity)
                else:
                    synth.noteoff(channel, pitch)
                position += 1
            stop = min(events[position][0], cursor + block, n_render)
            if voice.vibrato_cents:
                bend = voice.vibrato_cents / 200.0 * np.sin(2 * np.pi * 5.5 * cursor / sample_rate)
                synth.pitch_bend(channel, int(bend * 8191))  # ±8192 = ±2 semitones
            if stop > cursor:
                out[cursor:stop] = _write_mono(synth, stop - cursor)
            cursor = stop
        synth.all_sounds_off(channel)
        while synth.get_active_voice_count() > 0:  # drain so the next take starts from silence
            _write_mono(synth, 16 * _BLOCK)
    return out[:n_total]


def render_clip(
    category: str,
    duration: float,
    sample_rate: int,
    seed: int | np.random.Generator,
    soundfont: str | Path | None = None,
    rms_db: float = -20.0,
    timbre: Timbre | None = None,
) -> np.ndarray:
    """A new melody of ``category`` rendered and normalised to ``rms_db`` dBFS RMS (peak kept below 0.99).

    Args:
        category: A key of :data:`VOICES`.
        duration: Seconds.
        sample_rate: Hz.
        seed: Seed or generator for the melody.
        soundfont: General MIDI soundfont; found automatically when ``None``.
        rms_db: Target loudness.
        timbre: How to vary the voice's sound (None: as it is).
    """
    if category not in VOICES:
        raise DatasetError(f"unknown sound category {category!r}; choose from {sorted(VOICES)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    voice = VOICES[category]
    if timbre is None:
        notes = compose(voice, duration, rng)
    else:
        if voice.pattern == "melody" and not voice.percussion:
            shift = int(np.clip(timbre.transpose, 12 - voice.low, 115 - voice.high))
            voice = replace(voice, low=voice.low + shift, high=voice.high + shift)
        notes = compose(voice, duration, rng, timbre.articulation)
    wave = render(notes, voice, duration, sample_rate, find_soundfont(soundfont))
    if timbre is not None:
        wave = equalise(wave, sample_rate, timbre)
    rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))
    if rms == 0.0:
        raise DatasetError(f"FluidSynth rendered silence for {category!r}: check the soundfont {soundfont}")
    gain = min(10 ** (rms_db / 20) / rms, 0.99 / float(np.abs(wave).max()))
    return (wave * gain).astype(np.float32)
