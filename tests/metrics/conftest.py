"""Shared fixtures for the metric tests: rendered instrument audio and realistic separation estimates.

The real-audio tests render instruments with FluidSynth and a General MIDI soundfont (Debian packages
``fluidsynth`` and ``fluidr3mono-gm-soundfont``, which ``make test`` installs through ``scripts/system-deps.sh``).
Without them these tests *fail*, naming what is missing: a skip would let CI pass without ever comparing the
metrics with mir_eval on real audio. Set ``AVTOOLKIT_ALLOW_MISSING_FLUIDSYNTH=1`` to skip them instead on a
machine where the packages cannot be installed.
"""

import os

import numpy as np
import pytest
import torch
from metrics_audio_cases import ESTIMATE_KINDS, SAMPLE_RATE, SCENES, make_estimates

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.synth.sounds import render_clip

ALLOW_MISSING_FLUIDSYNTH = "AVTOOLKIT_ALLOW_MISSING_FLUIDSYNTH"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run these tests on one intra-op thread (restored afterwards).

    The BSS Eval recursion issues ~15k small ops per call; on a shared 2-core machine OpenMP's thread
    hand-offs made them up to 40× slower with 2 threads than with 1.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def scenes() -> list[np.ndarray]:
    """Rendered references, one ``(N, L)`` float64 array per scene (FluidSynth, General MIDI soundfont).

    Fails when FluidSynth or the soundfont is missing, unless ``AVTOOLKIT_ALLOW_MISSING_FLUIDSYNTH=1`` (skip).
    """
    try:
        return [
            np.stack([render_clip(name, seconds, SAMPLE_RATE, seed=10 * k + j) for j, name in enumerate(names)]).astype(
                np.float64
            )
            for k, (names, seconds) in enumerate(SCENES)
        ]
    except DatasetError as err:  # no soundfont / FluidSynth on this machine
        message = f"cannot render instrument audio: {err}"
    if os.environ.get(ALLOW_MISSING_FLUIDSYNTH) == "1":
        pytest.skip(f"{message} ({ALLOW_MISSING_FLUIDSYNTH}=1)")
    pytest.fail(
        f"{message}. Install FluidSynth and a General MIDI soundfont (`make test` does, through "
        f"scripts/system-deps.sh; or `sudo apt-get install fluidsynth fluidr3mono-gm-soundfont`), or set "
        f"{ALLOW_MISSING_FLUIDSYNTH}=1 to skip the real-audio metric tests.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def two_source_batch(scenes: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 2-source, 2 s clips with realistic estimates: references and estimates ``(B, 2, L)``."""
    rng = np.random.default_rng(0)
    L = 2 * SAMPLE_RATE
    refs = [s[:2, :L] for s in scenes]
    ests = [make_estimates(r, ESTIMATE_KINDS[i % len(ESTIMATE_KINDS)], rng) for i, r in enumerate(refs)]
    return torch.from_numpy(np.stack(refs)), torch.from_numpy(np.stack(ests))
