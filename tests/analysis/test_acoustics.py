import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.analysis.acoustics import (
    amplitude_ratio,
    descriptor_table,
    format_table,
    harmonic_analysis,
    harmonic_complexity,
)

SR = 11025


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: these are many small ops, which OpenMP hand-offs slow down ~6x on a busy 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def harmonic_tone(f0: float, amplitudes, seconds: float = 1.0, sr: int = SR, phases=None) -> torch.Tensor:
    """Σ_k a_k sin(2π k f0 t + φ_k), k = 1..len(amplitudes), float64."""
    t = torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    phases = [0.0] * len(amplitudes) if phases is None else phases
    return sum(
        a * torch.sin(2 * math.pi * (k + 1) * f0 * t + p)
        for k, (a, p) in enumerate(zip(amplitudes, phases, strict=True))
    )


# --- amplitude ratio ---------------------------------------------------------------------------------------------


def test_amplitude_ratio_by_hand():
    # [3, -4, 0, 0]: max|x| = 4, rms = sqrt((9 + 16) / 4) = 2.5 -> 1.6
    assert amplitude_ratio(torch.tensor([3.0, -4.0, 0.0, 0.0])) == pytest.approx(1.6)
    # a square wave: |x| constant -> max = rms -> 1
    assert amplitude_ratio(torch.tensor([1.0, -1.0, 1.0, -1.0])) == pytest.approx(1.0)
    # one impulse of height 2 in 4 samples: rms = sqrt(4 / 4) = 1 -> 2 = sqrt(L)
    assert amplitude_ratio(torch.tensor([0.0, 0.0, 0.0, 2.0])) == pytest.approx(2.0)
    # a sine over 10 whole periods of 100 samples, its peak on a sample: 1 / (1/sqrt(2)) = sqrt(2)
    sine = 0.3 * torch.sin(2 * math.pi * torch.arange(1000, dtype=torch.float64) / 100)
    assert amplitude_ratio(sine) == pytest.approx(math.sqrt(2), rel=1e-9)


def test_amplitude_ratio_is_a_float_for_one_clip_and_batched_otherwise():
    x = torch.randn(2, 3, 500, generator=torch.Generator().manual_seed(0))
    out = amplitude_ratio(x)
    assert isinstance(amplitude_ratio(x[0, 0]), float)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    assert float(out[1, 2]) == pytest.approx(amplitude_ratio(x[1, 2]))


def test_amplitude_ratio_rejects_silence():
    with pytest.raises(ValueError, match="silent"):
        amplitude_ratio(torch.zeros(100))
    x = torch.randn(3, 100)
    x[1] = 0
    with pytest.raises(ValueError, match=r"silent.*\(1,\)"):
        amplitude_ratio(x)
    with pytest.raises(ValueError, match="NaN"):
        amplitude_ratio(torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError):
        amplitude_ratio(torch.zeros(3, 0))


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=1, max_size=64).filter(
        lambda v: any(abs(x) > 1e-3 for x in v)
    ),
    gain=st.floats(1e-3, 1e3),
)
def test_amplitude_ratio_is_gain_invariant_and_bounded(values, gain):
    x = torch.tensor(values, dtype=torch.float64)
    r = amplitude_ratio(x)
    assert 1 - 1e-9 <= r <= math.sqrt(len(values)) + 1e-9
    assert amplitude_ratio(gain * x) == pytest.approx(r, rel=1e-9)


# --- harmonic complexity on signals with a known answer ------------------------------------------------------------


@pytest.mark.parametrize("f0", [55.0, 220.0, 440.0, 600.0])
def test_pure_tone_has_zero_complexity(f0):
    assert float(harmonic_complexity(harmonic_tone(f0, [0.5]), SR)) < 1e-3


@pytest.mark.parametrize("f0", [55.0, 220.0, 600.0])
def test_equal_harmonics_give_seven_eighths(f0):
    # 8 harmonics of equal energy: HCR = 1/8 -> complexity = 7/8
    x = harmonic_tone(f0, [0.1] * 8)
    assert float(harmonic_complexity(x, SR)) == pytest.approx(7 / 8, abs=2e-3)


def test_one_over_k_series():
    # a_k = 1/k -> E_k ∝ 1/k², HCR = 1 / Σ_{k=1..8} 1/k² = 1 / 1.527422... -> complexity 0.345302
    expected = 1 - 1 / sum(1 / k**2 for k in range(1, 9))
    assert expected == pytest.approx(0.345302, abs=1e-6)
    x = harmonic_tone(110.0, [1 / k for k in range(1, 9)])
    assert float(harmonic_complexity(x, SR)) == pytest.approx(expected, abs=2e-3)


def test_only_the_first_n_harmonics_count():
    # harmonics 9..12 are outside the first 8: the 1/k answer does not move
    x = harmonic_tone(110.0, [1 / k for k in range(1, 13)])
    expected = 1 - 1 / sum(1 / k**2 for k in range(1, 9))
    assert float(harmonic_complexity(x, SR)) == pytest.approx(expected, abs=2e-3)
    # with K = 2 the answer is 1 - 1 / (1 + 1/4) = 0.2
    assert float(harmonic_complexity(x, SR, n_harmonics=2)) == pytest.approx(0.2, abs=2e-3)


@settings(max_examples=12, deadline=None)
@given(
    # a_1 = 1 and a_2..a_8 up to 1.4 (a fundamental much weaker than an upper partial makes the signal nearly
    # periodic at a multiple of f0, and any pitch tracker may report that multiple)
    upper=st.lists(st.floats(0.0, 1.4), min_size=7, max_size=7),
    f0=st.floats(80.0, 500.0),
    seed=st.integers(0, 2**16),
)
def test_complexity_matches_the_harmonic_amplitudes(upper, f0, seed):
    # any amplitudes a_k (random phases): complexity = 1 - a_1² / Σ_k a_k²
    amplitudes = [1.0, *upper]
    phases = np.random.default_rng(seed).uniform(0, 2 * math.pi, 8).tolist()
    x = harmonic_tone(f0, amplitudes, seconds=0.5, phases=phases)
    expected = 1 - 1 / sum(a * a for a in amplitudes)
    assert float(harmonic_complexity(x, SR)) == pytest.approx(expected, abs=0.01)


def test_complexity_is_gain_invariant():
    x = harmonic_tone(220.0, [1.0, 0.5, 0.7, 0.1])
    assert float(harmonic_complexity(1e-3 * x, SR)) == pytest.approx(float(harmonic_complexity(10 * x, SR)), abs=1e-9)


def test_complexity_is_batched_over_leading_dims():
    tones = [harmonic_tone(f, a, seconds=0.5) for f, a in [(110, [1.0]), (220, [0.1] * 8), (330, [1, 0.5])]]
    x = torch.stack([torch.stack(tones), torch.stack(tones[::-1])])  # (2, 3, L)
    out = harmonic_complexity(x, SR)
    assert out.shape == (2, 3)
    assert torch.allclose(out[0], out[1].flip(0))
    assert float(out[0, 2]) == pytest.approx(float(harmonic_complexity(tones[2], SR)), abs=1e-12)
    assert harmonic_complexity(tones[0], SR).shape == ()


def test_f0_track_and_frame_selection():
    # 0.5 s of a 1/k tone at 196 Hz, 0.3 s of silence, 0.5 s of a tone at 330 Hz
    a = harmonic_tone(196.0, [1 / k for k in range(1, 9)], seconds=0.5)
    b = harmonic_tone(330.0, [1 / k for k in range(1, 9)], seconds=0.5)
    x = torch.cat([a, torch.zeros(round(0.3 * SR), dtype=torch.float64), b])
    result = harmonic_analysis(x, SR)
    times, used, f0 = result.frame_times, result.used[0], result.f0[0]
    first, gap, second = times < 0.45, (times > 0.56) & (times < 0.74), times > 0.85
    assert used[first].all() and used[second].all() and not used[gap].any()
    assert torch.allclose(f0[first], torch.tensor(196.0, dtype=torch.float64), rtol=2e-3)
    assert torch.allclose(f0[second], torch.tensor(330.0, dtype=torch.float64), rtol=2e-3)
    # energies per harmonic follow 1/k² in every frame inside a tone
    e = result.energies[0][first | second]
    ratio = e / e[:, :1]
    assert torch.allclose(ratio, (1 / torch.arange(1, 9, dtype=torch.float64) ** 2).expand_as(ratio), atol=2e-3)


def test_noise_and_too_few_harmonics_are_undefined():
    noise = torch.randn(SR, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert math.isnan(float(harmonic_complexity(noise, SR)))
    # f0 = 1000 Hz at 11025 Hz: 8·1000 > Nyquist (5512.5), so no frame has its first 8 harmonics -> NaN ...
    x = harmonic_tone(1000.0, [1 / k for k in range(1, 9) if k * 1000 < SR / 2])
    assert math.isnan(float(harmonic_complexity(x, SR)))
    # ... unless fewer are enough: bands 1..5 fit (5·1000 + 250 <= 5512.5): 1 - 1 / Σ_{k≤5} 1/k² = 0.316765
    relaxed = float(harmonic_complexity(x, SR, min_harmonics=2))
    assert relaxed == pytest.approx(1 - 1 / sum(1 / k**2 for k in range(1, 6)), abs=2e-3)


def test_harmonic_complexity_errors():
    with pytest.raises(ValueError, match="silent"):
        harmonic_complexity(torch.zeros(SR), SR)
    with pytest.raises(ValueError, match="too short"):
        harmonic_complexity(torch.randn(100), SR)
    with pytest.raises(ValueError, match="two periods"):
        harmonic_complexity(torch.randn(SR), SR, win_seconds=0.03)
    with pytest.raises(ValueError, match="min_harmonics"):
        harmonic_complexity(torch.randn(SR), SR, min_harmonics=9)
    with pytest.raises(ValueError, match="fmax"):
        harmonic_complexity(torch.randn(SR), SR, fmax=6000.0)


# --- descriptor table ----------------------------------------------------------------------------------------------


def test_descriptor_table_by_hand():
    sines = [harmonic_tone(f, [0.5], seconds=0.5) for f in (147.0, 294.0)]
    rich = [harmonic_tone(110.0, [0.1] * 8, seconds=0.5)]
    noise = [torch.randn(SR // 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)]
    rows = descriptor_table({"sine": sines, "rich": rich, "noise": noise}, SR)
    sine, rich_row, noise_row = rows
    # sines: amplitude ratio sqrt(2) each (std 0), complexity 0
    assert (sine.name, sine.n_clips) == ("sine", 2)
    assert sine.amplitude_ratio_mean == pytest.approx(math.sqrt(2), rel=1e-3)
    assert sine.amplitude_ratio_std == pytest.approx(0.0, abs=1e-3)
    assert sine.harmonic_complexity_mean == pytest.approx(0.0, abs=1e-3)
    # one clip: std undefined
    assert rich_row.harmonic_complexity_mean == pytest.approx(7 / 8, abs=2e-3)
    assert math.isnan(rich_row.amplitude_ratio_std)
    # noise: no complexity
    assert noise_row.n_undefined == 1 and math.isnan(noise_row.harmonic_complexity_mean)
    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 5 and lines[0].startswith("| class | clips |") and "clips without complexity" in lines[0]
    assert lines[2] == "| sine | 2 | 1.41 ± 0.00 | 0.00 ± 0.00 | 0 |"
    assert lines[3].startswith("| rich | 1 |") and lines[3].endswith(" | 0 |") and "±" not in lines[3]
    assert "n/a" in lines[4]


def test_descriptor_table_errors():
    with pytest.raises(ValueError, match="no clips"):
        descriptor_table({"a": []}, SR)
    with pytest.raises(ValueError, match=r"'a', clip 1.*silent"):
        descriptor_table({"a": [harmonic_tone(200.0, [1.0]), torch.zeros(SR)]}, SR)
    with pytest.raises(ValueError, match="1-D"):
        descriptor_table({"a": [torch.ones(2, SR)]}, SR)


# --- real instruments (FluidSynth) ---------------------------------------------------------------------------------

REAL_SR = 22050
SUSTAINED = ("flute", "clarinet", "cello", "trumpet", "violin")


@pytest.fixture(scope="module")
def instruments() -> dict[str, list[tuple[np.ndarray, list]]]:
    """Three 3 s melodies per instrument at 22050 Hz, with the notes they play."""
    from avtoolkit.data.errors import DatasetError
    from avtoolkit.data.synth.sounds import VOICES, compose, render_clip

    out = {}
    try:
        for name in (*SUSTAINED, "xylophone"):
            out[name] = [
                (render_clip(name, 3.0, REAL_SR, seed=s), compose(VOICES[name], 3.0, np.random.default_rng(s)))
                for s in range(3)
            ]
    except DatasetError as err:  # no soundfont / FluidSynth on this machine
        pytest.skip(f"cannot render instrument audio: {err}")
    return out


def test_f0_follows_the_played_notes(instruments):
    # frames lying inside one note (0.3 s clear of other notes' release) must find its pitch within half a semitone
    for name in SUSTAINED:
        hits = total = 0
        for wave, notes in instruments[name]:
            result = harmonic_analysis(torch.from_numpy(wave), REAL_SR)
            for i, t in enumerate(result.frame_times.tolist()):
                lo, hi = t - 0.05, t + 0.05
                inside = [n for n in notes if n.start + 0.01 <= lo and hi <= n.start + n.duration]
                near = [n for n in notes if n.start < hi and n.start + n.duration + 0.3 > lo]
                if len(inside) == 1 and len(near) == 1 and result.used[0, i]:
                    expected = 440.0 * 2 ** ((inside[0].pitch - 69) / 12)
                    total += 1
                    hits += abs(math.log2(float(result.f0[0, i]) / expected)) < 0.5 / 12
        assert total >= 30, name
        assert hits / total >= 0.9, (name, hits, total)


def test_real_instrument_descriptors(instruments):
    clips = {name: [torch.from_numpy(w) for w, _ in instruments[name]] for name in instruments}
    rows = {row.name: row for row in descriptor_table(clips, REAL_SR)}
    for name in SUSTAINED:
        assert rows[name].n_undefined == 0, name
    # every value is in [0, 1] (checked on the batch: one (n_classes, 3, L) tensor) and gain invariant
    batch = torch.stack([torch.stack(c) for c in clips.values()])
    values = harmonic_complexity(batch, REAL_SR)
    finite = values[torch.isfinite(values)]
    assert finite.numel() >= 15 and ((finite >= 0) & (finite <= 1)).all()
    assert float(harmonic_complexity(0.1 * batch[0, 0], REAL_SR)) == pytest.approx(float(values[0, 0]), abs=1e-9)
    # what holds robustly: a flute concentrates its energy in the fundamental far more than a trumpet does, and a
    # struck xylophone is far more impulsive (higher crest factor) than a sustained flute
    assert rows["flute"].harmonic_complexity_mean + 0.2 < rows["trumpet"].harmonic_complexity_mean
    assert rows["xylophone"].amplitude_ratio_mean > 2 * rows["flute"].amplitude_ratio_mean
    table = format_table(list(rows.values()))
    assert table.count("\n") == len(rows) + 1
