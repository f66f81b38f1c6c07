import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.analysis.gates import GateRecorder, compare_gates, corrupt_frames, gate_statistics
from avtoolkit.fusion.gating import GatedFusion

# (n=2 clips, N=2 slots, 2 values each)
GATES = torch.tensor([[[0.2, 0.4], [0.6, 0.8]], [[1.0, 0.0], [0.5, 0.5]]])
LABELS = torch.tensor([[3, 1], [1, -1]])


def test_gate_statistics_by_hand():
    stats = gate_statistics(GATES, LABELS)
    # values 0.2 0.4 0.6 0.8 1.0 0.0 0.5 0.5: sum 4.0 -> mean 0.5
    assert stats.mean == pytest.approx(0.5)
    # squared deviations .09 .01 .01 .09 .25 .25 0 0 = 0.70 -> population variance 0.0875
    assert stats.std == pytest.approx(math.sqrt(0.0875))
    # strictly above 0.5: 0.6, 0.8, 1.0 -> 3/8 (0.5 itself is not above)
    assert stats.frac_above_half == pytest.approx(3 / 8)
    assert (stats.n_values, stats.n_sources) == (8, 4)
    # slot 0: (0.2 + 0.4 + 1.0 + 0.0) / 4 = 0.4; slot 1: (0.6 + 0.8 + 0.5 + 0.5) / 4 = 0.6
    assert stats.per_slot_mean == pytest.approx((0.4, 0.6))
    # class 3: clip 0 slot 0 -> 0.3; class 1: clip 0 slot 1 and clip 1 slot 0 -> (0.6 + 0.8 + 1.0 + 0.0) / 4 = 0.6
    # label -1 (clip 1 slot 1) is skipped
    assert stats.per_class_mean == pytest.approx({1: 0.6, 3: 0.3})
    assert stats.per_class_sources == {1: 2, 3: 1}
    assert gate_statistics(GATES).per_class_mean == {}


def test_batches_and_trailing_shapes():
    # per-batch lists give the same numbers as one tensor; labels may come per batch too
    whole = gate_statistics(GATES, LABELS)
    split = gate_statistics([GATES[:1], GATES[1:]], [LABELS[:1], LABELS[1:]])
    assert split == whole
    assert gate_statistics([GATES[:1], GATES[1:]], LABELS) == whole
    # no trailing dims: one value per source
    assert gate_statistics(torch.tensor([[0.25, 0.75]])).per_slot_mean == pytest.approx((0.25, 0.75))
    # a channel-wise gate expanded over h×w (as GatedFusion returns it) has the channel-wise means
    channel = torch.rand(3, 2, 4, 1, 1)
    assert gate_statistics(channel.expand(3, 2, 4, 5, 5)).mean == pytest.approx(gate_statistics(channel).mean)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 4), min_size=1, max_size=5).filter(lambda s: sum(s) > 0), seed=st.integers(0, 99))
def test_streaming_equals_concatenated(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    batches = [torch.rand(b, 3, 2, 2, generator=g) for b in sizes]
    labels = [torch.randint(-1, 4, (b, 3), generator=g) for b in sizes]
    got = gate_statistics(batches, labels)
    values = torch.cat(batches).double()
    lab = torch.cat(labels)
    assert got.mean == pytest.approx(float(values.mean()))
    assert got.std == pytest.approx(float(values.std(unbiased=False)), abs=1e-9)
    assert got.frac_above_half == pytest.approx(float((values > 0.5).double().mean()))
    for c, m in got.per_class_mean.items():
        assert m == pytest.approx(float(values[lab == c].mean()))


def test_gate_statistics_errors():
    with pytest.raises(ValueError, match="empty"):
        gate_statistics([])
    with pytest.raises(ValueError, match="differ"):
        gate_statistics([torch.rand(1, 2, 3), torch.rand(1, 3, 3)])
    with pytest.raises(ValueError, match="labels"):
        gate_statistics(GATES, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        gate_statistics(torch.tensor([[math.nan, 0.5]]))
    with pytest.raises(ValueError, match=r"\(n, N"):
        gate_statistics(torch.rand(4))


class _Gate(torch.nn.Module):
    """Returns (out, σ) like GatedFusion."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = torch.sigmoid(x)
        return x * sigma, sigma


def test_gate_recorder_hooks_a_module():
    gate = _Gate()
    x = [torch.randn(2, 2, 3, 4, 4), torch.randn(1, 2, 3, 4, 4)]
    labels = [torch.tensor([[0, 1], [1, 0]]), torch.tensor([[2, -1]])]
    with GateRecorder(gate) as recorder:
        for batch in x:
            gate(batch)
    gate(torch.randn(2, 2, 3, 4, 4))  # after the block: not recorded
    assert len(recorder.summaries) == 2
    expected = gate_statistics([torch.sigmoid(b) for b in x], labels)
    got = recorder.statistics(labels)
    assert got.mean == pytest.approx(expected.mean) and got.std == pytest.approx(expected.std)
    assert got.per_class_mean == pytest.approx(expected.per_class_mean)
    recorder.clear()
    with pytest.raises(ValueError, match="empty"):
        recorder.statistics()


def test_gate_recorder_on_the_dgfm():
    fusion = GatedFusion(4, 6)
    with GateRecorder(fusion) as recorder:
        fusion(torch.randn(2, 4, 8, 8), torch.randn(2, 3, 6))
    # the gate convolution starts at zero: σ = sigmoid(0) = 0.5 everywhere, (2 clips × 3 sources × 4 × 8 × 8)
    stats = recorder.statistics()
    assert stats.mean == pytest.approx(0.5) and stats.std == pytest.approx(0.0, abs=1e-9)
    assert stats.n_values == 2 * 3 * 4 * 8 * 8 and stats.frac_above_half == 0.0


def test_compare_gates_markdown():
    clean = gate_statistics(GATES, LABELS)
    corrupted = gate_statistics(GATES * 0.6, LABELS)  # mean 0.3
    table = compare_gates(clean, corrupted, class_names=["a", "b", "c", "d"])
    lines = table.splitlines()
    assert lines[0] == "| | clean | corrupted | difference |"
    assert "| mean σ | 0.500 | 0.300 | -0.200 |" in lines
    assert "| mean σ, slot 0 | 0.400 | 0.240 | -0.160 |" in lines
    assert "| mean σ, d | 0.300 | 0.180 | -0.120 |" in lines  # class 3 is "d"
    assert "| mean σ, b | 0.600 | 0.360 | -0.240 |" in lines
    assert lines[-1] == "| values | 8 | 8 | |"


# --- frame corruptions -------------------------------------------------------------------------------------------


def frames(B: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(B, 2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(seed))  # (B, N, Tv, 3, H, W)


def test_noise_corruption():
    x = frames()
    out = corrupt_frames(x, "noise", 0.5, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    again = corrupt_frames(x, "noise", 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # reproducible with a generator
    assert torch.equal(corrupt_frames(x, "noise", 0.0), x)  # std 0: unchanged
    # the unclamped part moves by N(0, 0.5²): the residual std on pixels far from the bounds is about 0.5
    y = torch.full((64, 3, 16, 16), 0.5)
    residual = corrupt_frames(y, "noise", 0.05, generator=torch.Generator().manual_seed(2)) - y
    assert float(residual.std()) == pytest.approx(0.05, rel=0.05)


def test_blank_corruption():
    x = frames()
    assert torch.equal(corrupt_frames(x, "blank"), torch.full_like(x, 0.5))
    # strength 0.5: halfway to grey, (x + 0.5) / 2
    assert torch.allclose(corrupt_frames(x, "blank", 0.5), (x + 0.5) / 2)
    assert torch.equal(corrupt_frames(x, "blank", 0.0), x)


def test_shuffle_corruption_is_a_derangement_of_the_batch():
    x = frames(B=5)
    for seed in range(10):
        out = corrupt_frames(x, "shuffle", generator=torch.Generator().manual_seed(seed))
        # every item now holds the frames of another item, and each item's frames are used exactly once
        sources = [next(j for j in range(5) if torch.equal(out[i], x[j])) for i in range(5)]
        assert sorted(sources) == list(range(5)) and all(s != i for i, s in enumerate(sources))
    # strength 0.4 of 5 items: 2 items swap, 3 keep their own frames
    out = corrupt_frames(x, "shuffle", 0.4, generator=torch.Generator().manual_seed(0))
    assert sum(torch.equal(out[i], x[i]) for i in range(5)) == 3
    assert torch.equal(corrupt_frames(x, "shuffle", 0.0), x)


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["noise", "blank", "shuffle"]), strength=st.floats(0, 1), seed=st.integers(0, 999))
def test_corruptions_stay_in_range_and_keep_the_input(kind, strength, seed):
    x = frames(B=3, seed=seed)
    before = x.clone()
    out = corrupt_frames(x, kind, strength, generator=torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, before)  # not modified in place


def test_corruption_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt_frames(frames() * 2 - 1, "noise")  # normalised frames: corrupt before normalising
    with pytest.raises(ValueError, match="at least 2"):
        corrupt_frames(frames(B=1), "shuffle")
    with pytest.raises(ValueError, match="kind"):
        corrupt_frames(frames(), "blur")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3, H, W"):
        corrupt_frames(torch.rand(2, 4, 8, 8), "blank")
    with pytest.raises(ValueError, match="strength"):
        corrupt_frames(frames(), "blank", 1.5)
    with pytest.raises(ValueError, match="floating"):
        corrupt_frames(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "blank")
