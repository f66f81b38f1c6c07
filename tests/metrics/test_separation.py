"""SeparationMetrics: aggregation, protocols, silent-source policy, state merging, mir_eval backend."""

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
    torch.testing.assert_close(whole["sdr_median"], sdr.mean(1).median())
    torch.testing.assert_close(whole["sdr_mix"], sdr_mix.mean(1).mean())
    torch.testing.assert_close(whole["sir_mix"], sir_mix.mean(1).mean())
    torch.testing.assert_close(whole["sdri"], (sdr - sdr_mix).mean())
    torch.testing.assert_close(whole["sdr_sem"], sdr.mean(1).std() / math.sqrt(len(ref)))
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
        SeparationMetrics(protocol="iquery")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mixture"):
        SeparationMetrics().update(torch.ones(1, 2, 50), torch.ones(1, 2, 50), torch.ones(1, 49))
