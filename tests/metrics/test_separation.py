"""SeparationMetrics: aggregation, protocols, silent-source policy, state merging, mir_eval backend.

The golden cases (one per protocol) replace the BSS Eval scorer by a table of per-source scores chosen by hand,
so that the expected numbers are plain arithmetic written out in the test; the real-audio tests check the wiring
to the scorer. Real audio needs FluidSynth (see ``conftest.py``: the tests fail without it unless
``AVTOOLKIT_ALLOW_MISSING_FLUIDSYNTH=1``).
"""

import math

import pytest
import torch

from avtoolkit.metrics import SeparationMetrics, bss_eval_sources


def feed(metric: SeparationMetrics, ref: torch.Tensor, est: torch.Tensor, sizes: list[int]) -> None:
    start = 0
    for size in sizes:
        sl = slice(start, start + size)
        metric.update(est[sl], ref[sl], ref[sl].sum(1))
        start += size
    assert start == len(ref)


def run(metric: SeparationMetrics, ref: torch.Tensor, est: torch.Tensor, sizes: list[int]) -> dict[str, torch.Tensor]:
    feed(metric, ref, est, sizes)
    return metric.compute()


def test_default_protocol_values_and_batch_size_independence(
    two_source_batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    ref, est = two_source_batch
    whole = run(SeparationMetrics(), ref, est, [len(ref)])
    split = run(SeparationMetrics(), ref, est, [1, len(ref) - 1])
    for key, value in whole.items():
        torch.testing.assert_close(split[key], value, rtol=0, atol=1e-9, equal_nan=True)
    sdr, sir, sar = bss_eval_sources(ref, est)
    mix = ref.sum(1, keepdim=True).expand_as(ref)
    sdr_mix, sir_mix, _ = bss_eval_sources(ref, mix)
    torch.testing.assert_close(whole["sdr"], sdr.mean(1).mean())
    torch.testing.assert_close(whole["sir"], sir.mean(1).mean())
    torch.testing.assert_close(whole["sar"], sar.mean(1).mean())
    torch.testing.assert_close(whole["sdr_median"], torch.quantile(sdr.mean(1), 0.5))
    torch.testing.assert_close(whole["sdr_mix"], sdr_mix.mean(1).mean())
    torch.testing.assert_close(whole["sir_mix"], sir_mix.mean(1).mean())
    torch.testing.assert_close(whole["sdri"], (sdr - sdr_mix).mean())
    torch.testing.assert_close(whole["sdr_sem"], sdr.mean(1).std() / math.sqrt(len(ref)))
    torch.testing.assert_close(whole["sar_sem"], sar.mean(1).std() / math.sqrt(len(ref)))
    assert int(whole["n_clips"]) == len(ref)
    assert int(whole["n_skipped_silent_ref"]) == int(whole["n_silent_est"]) == 0


def test_sound_of_pixels_is_the_mean_of_batch_means(
    two_source_batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    ref, est = two_source_batch
    sdr = bss_eval_sources(ref, est)[0].mean(1)
    out = run(SeparationMetrics(protocol="sound_of_pixels"), ref, est, [1, len(ref) - 1])
    torch.testing.assert_close(out["sdr"], (sdr[0] + sdr[1:].mean()) / 2)
    default = run(SeparationMetrics(), ref, est, [1, len(ref) - 1])
    assert not torch.isclose(out["sdr"], default["sdr"])  # batch-size dependent by design


def test_silent_reference_is_skipped_and_counted(two_source_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    ref, est = (t.clone() for t in two_source_batch)
    ref[0, 1] = 0.0
    metric = SeparationMetrics()
    out = run(metric, ref, est, [len(ref)])
    rest = run(SeparationMetrics(), ref[1:], est[1:], [len(ref) - 1])
    assert int(out["n_skipped_silent_ref"]) == 1 and int(out["n_clips"]) == len(ref) - 1
    torch.testing.assert_close(out["sdr"], rest["sdr"])
    assert metric.per_clip()["sdr"].shape == (len(ref) - 1, 2)


def test_silent_estimate_is_floored_and_counted(two_source_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    ref, est = (t.clone() for t in two_source_batch)
    est[1, 0] = 0.0
    metric = SeparationMetrics(silent_estimate_db=-40.0)
    out = run(metric, ref, est, [len(ref)])
    assert int(out["n_silent_est"]) == 1 and int(out["n_clips"]) == len(ref)
    clips = metric.per_clip()
    assert clips["silent_est"][1, 0] and clips["silent_est"].sum() == 1
    for name in ("sdr", "sir", "sar"):
        assert float(clips[name][1, 0]) == -40.0
    good = bss_eval_sources(ref[1:2], est[1:2])[0][0, 1]
    torch.testing.assert_close(clips["sdr"][1, 1], good)  # the clip's other source is scored normally
    # Sound of Pixels skips the whole clip instead, still counting the silent estimate.
    sop = run(SeparationMetrics(protocol="sound_of_pixels"), ref, est, [len(ref)])
    assert int(sop["n_clips"]) == len(ref) - 1 and int(sop["n_silent_est"]) == 1


def test_near_silence_threshold(two_source_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    ref, est = (t[:2].clone() for t in two_source_batch)
    est[0, 1] = 1e-12  # Σ|x| ≈ 2e-8: silent for the default threshold 1e-5, not for 0
    assert int(run(SeparationMetrics(), ref, est, [2])["n_silent_est"]) == 1
    assert int(run(SeparationMetrics(silence_threshold=0.0), ref, est, [2])["n_silent_est"]) == 0


def test_merge_state_equals_one_pass(two_source_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    ref, est = (t.clone() for t in two_source_batch)
    est[2, 1] = 0.0
    half = len(ref) // 2
    a, b = SeparationMetrics(), SeparationMetrics()
    feed(a, ref[:half], est[:half], [half])
    feed(b, ref[half:], est[half:], [len(ref) - half])
    a.merge_state(b)  # (compute() before merging would cache a's own result)
    merged = a.compute()
    whole = run(SeparationMetrics(), ref, est, [len(ref)])
    for key, value in whole.items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-9, equal_nan=True, msg=key)


def test_mir_eval_backend_agrees(two_source_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    ref, est = (t[:2] for t in two_source_batch)
    fast = run(SeparationMetrics(), ref, est, [2])
    exact = run(SeparationMetrics(backend="mir_eval"), ref, est, [2])
    for key in ("sdr", "sir", "sar", "sdr_mix", "sir_mix", "sdri"):
        assert abs(float(fast[key]) - float(exact[key])) < 0.01, key


def test_empty_metric_and_bad_arguments() -> None:
    with pytest.warns(UserWarning, match="before the ``update``"):
        out = SeparationMetrics().compute()
    assert math.isnan(float(out["sdr"])) and int(out["n_clips"]) == 0
    with pytest.raises(ValueError, match="protocol"):
        SeparationMetrics(protocol="musdb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mixture"):
        SeparationMetrics().update(torch.ones(1, 2, 50), torch.ones(1, 2, 50), torch.ones(1, 49))


# -- golden cases: hand-chosen per-source scores, hand-computed expectations ------------------------------------

# clip id: (SDR, SIR, SAR, SDR_mix, SIR_mix), each for (source 0 = the query, source 1).
SCORES = {
    0: ((4.0, 8.0), (10.0, 14.0), (6.0, 12.0), (0.0, -2.0), (1.0, -1.0)),
    1: ((2.0, 0.0), (5.0, 3.0), (7.0, 1.0), (-1.0, 1.0), (0.0, 2.0)),
    2: ((9.0, 9.0), (9.0, 9.0), (9.0, 9.0), (9.0, 9.0), (9.0, 9.0)),  # silent reference: never scored
    3: ((10.0, 6.0), (20.0, 16.0), (11.0, 9.0), (3.0, -3.0), (4.0, -4.0)),
    4: ((5.0, 7.0), (9.0, 11.0), (7.0, 3.0), (2.0, 0.0), (3.0, 1.0)),  # source 1's estimate is silent
    5: ((9.0, 9.0), (9.0, 9.0), (9.0, 9.0), (9.0, 9.0), (9.0, 9.0)),  # silent reference: never scored
}
SILENT_REF = (2, 5)
SILENT_EST = 4
BATCHES = [[0, 1, 2], [3, 4], [5]]  # the last batch has no clip a compat protocol keeps


def table_score(self, estimates, references, mixture):
    """Stands in for BSS Eval: each clip's scores, looked up by the clip id carried in its mixture's 1st sample."""
    rows = torch.tensor([SCORES[int(i)] for i in mixture[:, 0]], dtype=torch.float64)  # (B, 5, N)
    return tuple(rows.unbind(1))


def golden_batch(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimates, references (B, 2, 8) and mixtures (B, 8) of the given clips: ones, with the chosen silences."""
    ref = torch.ones(len(ids), 2, 8, dtype=torch.float64)
    est = torch.ones(len(ids), 2, 8, dtype=torch.float64)
    for b, i in enumerate(ids):
        if i in SILENT_REF:
            ref[b, 1] = 0.0
        if i == SILENT_EST:
            est[b, 1] = 0.0
    mix = torch.ones(len(ids), 8, dtype=torch.float64)
    mix[:, 0] = torch.tensor(ids, dtype=torch.float64)
    return est, ref, mix


def golden(protocol: str, batches: list[list[int]] = BATCHES, **kwargs) -> dict[str, float]:
    metric = SeparationMetrics(protocol=protocol, **kwargs)  # type: ignore[arg-type]
    for ids in batches:
        metric.update(*golden_batch(ids))
    return {key: float(value) for key, value in metric.compute().items()}


def sem(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def assert_golden(out: dict[str, float], expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key


@pytest.fixture
def table_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SeparationMetrics, "_score", table_score)


@pytest.mark.usefixtures("table_scores")
def test_golden_default() -> None:
    # Kept: clips 0, 1, 3 and 4; clip 4's silent estimate scores -30 dB (SDR, SIR, SAR) instead of its 7, 11, 3.
    sdr = [(4 + 8) / 2, (2 + 0) / 2, (10 + 6) / 2, (5 - 30) / 2]  # 6, 1, 8, -12.5
    sir = [(10 + 14) / 2, (5 + 3) / 2, (20 + 16) / 2, (9 - 30) / 2]
    sar = [(6 + 12) / 2, (7 + 1) / 2, (11 + 9) / 2, (7 - 30) / 2]
    sdr_mix = [(0 - 2) / 2, (-1 + 1) / 2, (3 - 3) / 2, (2 + 0) / 2]
    expected = {
        "sdr": 2.5 / 4,  # (6 + 1 + 8 - 12.5) / 4: a plain mean over clips, batches play no part
        "sir": sum(sir) / 4,
        "sar": sum(sar) / 4,
        "sdr_mix": sum(sdr_mix) / 4,
        "sdri": 2.5 / 4 - sum(sdr_mix) / 4,
        "sir_mix": ((1 - 1) / 2 + (0 + 2) / 2 + (4 - 4) / 2 + (3 + 1) / 2) / 4,
        "sdr_median": (1 + 6) / 2,  # even count: the mean of the two middle values of -12.5, 1, 6, 8
        "sdr_sem": sem(sdr),
        "sir_sem": sem(sir),
        "n_clips": 4,
        "n_skipped_silent_ref": 2,
        "n_silent_est": 1,
    }
    assert_golden(golden("default"), expected)
    assert_golden(golden("default", [[0, 1, 2, 3, 4, 5]]), expected)  # batch-size independent
    assert golden("default", silent_estimate_db=-40.0)["sdr"] == pytest.approx((6 + 1 + 8 + (5 - 40) / 2) / 4)


@pytest.mark.parametrize("protocol", ["sound_of_pixels", "iquery"])
@pytest.mark.usefixtures("table_scores")
def test_golden_sound_of_pixels_and_iquery(protocol: str) -> None:
    # Kept: clips 0, 1 (batch 1), 3 (batch 2); clip 4 has a silent estimate: skipped; batch 3 keeps nothing: 0.
    batch_sdr = [((4 + 8) / 2 + (2 + 0) / 2) / 2, (10 + 6) / 2, 0.0]  # 3.5, 8, 0
    batch_sir = [((10 + 14) / 2 + (5 + 3) / 2) / 2, (20 + 16) / 2, 0.0]
    batch_sar = [((6 + 12) / 2 + (7 + 1) / 2) / 2, (11 + 9) / 2, 0.0]
    batch_mix = [((0 - 2) / 2 + (-1 + 1) / 2) / 2, (3 - 3) / 2, 0.0]
    expected = {
        "sdr": 11.5 / 3,  # the mean of per-batch means; the mean over the kept clips would be 5
        "sir": sum(batch_sir) / 3,
        "sar": sum(batch_sar) / 3,
        "sdr_mix": sum(batch_mix) / 3,
        "sdri": 11.5 / 3 - sum(batch_mix) / 3,
        "sdr_median": 6.0,  # of the kept clips' 6, 1, 8
        "sdr_sem": sem([6.0, 1.0, 8.0]),
        "n_clips": 3,
        "n_skipped_silent_ref": 2,
        "n_silent_est": 1,
    }
    assert sum(batch_sdr) == 11.5
    assert_golden(golden(protocol), expected)
    # batch-size dependent by design: all clips in one batch give the mean over the kept clips
    assert golden(protocol, [[0, 1, 2, 3, 4, 5]])["sdr"] == pytest.approx((6 + 1 + 8) / 3)


@pytest.mark.usefixtures("table_scores")
def test_golden_clipsep() -> None:
    # Kept: clips 0, 1, 3 (clip 4 has a silent estimate, even if not of its query); only source 0 is scored.
    sdr, sir, sar = [4.0, 2.0, 10.0], [10.0, 5.0, 20.0], [6.0, 7.0, 11.0]  # the query's, of clips 0, 1, 3
    expected = {
        "sdr": 16 / 3,
        "sir": 35 / 3,
        "sar": 8.0,
        "sdr_mix": (0 - 1 + 3) / 3,
        "sir_mix": (1 + 0 + 4) / 3,
        "sdri": 16 / 3 - 2 / 3,
        "sdr_median": 4.0,
        "sir_median": 10.0,
        "sar_median": 7.0,
        "sdr_sem": sem(sdr),  # sqrt(((4 - 16/3)² + (2 - 16/3)² + (10 - 16/3)²) / 2 / 3) = 2.4037...
        "sir_sem": sem(sir),
        "sar_sem": sem(sar),
        "n_clips": 3,
        "n_skipped_silent_ref": 2,
        "n_silent_est": 1,
    }
    assert sem(sdr) == pytest.approx(math.sqrt(52 / 9), abs=1e-12)
    assert_golden(golden("clipsep"), expected)
    assert_golden(golden("clipsep", [[0, 1, 2, 3, 4, 5]]), expected)  # batch-size independent


def test_compat_protocols_on_real_audio(two_source_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    ref, est = two_source_batch
    sdr, sir, sar = bss_eval_sources(ref, est)
    sdr_mix = bss_eval_sources(ref, ref.sum(1, keepdim=True).expand_as(ref))[0]
    clipsep = run(SeparationMetrics(protocol="clipsep"), ref, est, [1, len(ref) - 1])
    torch.testing.assert_close(clipsep["sdr"], sdr[:, 0].mean())  # the query (first) source only
    torch.testing.assert_close(clipsep["sir"], sir[:, 0].mean())
    torch.testing.assert_close(clipsep["sar"], sar[:, 0].mean())
    torch.testing.assert_close(clipsep["sdr_mix"], sdr_mix[:, 0].mean())
    torch.testing.assert_close(clipsep["sdr_sem"], sdr[:, 0].std() / math.sqrt(len(ref)))
    sop = run(SeparationMetrics(protocol="sound_of_pixels"), ref, est, [1, len(ref) - 1])
    iquery = run(SeparationMetrics(protocol="iquery"), ref, est, [1, len(ref) - 1])
    for key, value in sop.items():
        torch.testing.assert_close(iquery[key], value, rtol=0, atol=0, equal_nan=True, msg=key)
