"""Segmentation metrics on hand-computed cases, the compat presets, and properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.metrics import BinarySegmentationMetrics, SemanticSegmentationMetrics

# sigmoid(5) = 0.9933 lies between thresholds 252 and 253; sigmoid(-5) = 0.0067 between thresholds 1 and 2.
BIG = 5.0


def frames(
    *pairs: tuple[list[list[float]], list[list[int]]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One clip per (logits, mask) pair, T = 1: ``logits (B, 1, H, W)``, ``target``, ``valid``."""
    logits = torch.tensor([p[0] for p in pairs], dtype=torch.float32)[:, None]
    target = torch.tensor([p[1] for p in pairs])[:, None]
    return logits, target, torch.ones(len(pairs), 1, dtype=torch.bool)


# Frame A: G = top row; P = left column -> IoU = 1/3.
#   t <= 0.0067 (thresholds 0, 1): all 4 pixels -> prec 1/2, rec 1 -> F = 1.3·0.5 / (0.15 + 1) = 13/23
#   0.0067 < t <= 0.9933: left column -> prec 1/2, rec 1/2 -> F = 1.3·0.25 / (0.15 + 0.5) = 1/2; above: 0
A = ([[BIG, -BIG], [BIG, -BIG]], [[1, 1], [0, 0]])
# Frame D: G = top-left; P = top-left -> IoU = 1. F: 4 pixels -> prec 1/4, rec 1 -> 1.3·0.25/1.075 = 13/43;
#   then exactly the top-left pixel -> F = 1.
D = ([[BIG, -BIG], [-BIG, -BIG]], [[1, 0], [0, 0]])
# Frame E: empty G; P = top-left -> IoU = fraction predicted background = 3/4; no F (empty ground truth).
E = ([[BIG, -BIG], [-BIG, -BIG]], [[0, 0], [0, 0]])


def test_binary_hand_computed_default() -> None:
    metric = BinarySegmentationMetrics()
    metric.update(*frames(A, D, E))
    out = metric.compute()
    torch.testing.assert_close(out["mj"], torch.tensor((1 / 3 + 1 + 3 / 4) / 3, dtype=torch.float64))
    # dataset F-curve: thresholds 0-1: (13/23 + 13/43)/2; thresholds 2-252: (1/2 + 1)/2 = 0.75 <- max
    torch.testing.assert_close(out["mf"], torch.tensor(0.75, dtype=torch.float64))
    assert 0.0067 < float(out["mf_threshold"]) <= 0.9933
    assert int(out["n_frames"]) == 3 and int(out["n_frames_f"]) == 2


def test_binary_empty_ground_truth_convention() -> None:
    metric = BinarySegmentationMetrics()
    empty_pred = ([[-BIG, -BIG], [-BIG, -BIG]], [[0, 0], [0, 0]])
    metric.update(*frames(empty_pred))
    out = metric.compute()
    assert float(out["mj"]) == 1.0  # nothing predicted on an empty ground truth: a perfect frame
    assert math.isnan(float(out["mf"])) and int(out["n_frames_f"]) == 0


def test_binary_avsbench_is_batch_dependent_default_is_not() -> None:
    logits, target, valid = frames(A, D, E)
    default_whole, default_split = BinarySegmentationMetrics(), BinarySegmentationMetrics()
    default_whole.update(logits, target, valid)
    default_split.update(logits[:1], target[:1], valid[:1])
    default_split.update(logits[1:], target[1:], valid[1:])
    for key, value in default_whole.compute().items():
        torch.testing.assert_close(default_split.compute()[key], value, equal_nan=True)
    # AVSBench, one clip per evaluation batch: mean of per-batch maxima = (13/23 + 1 + 0) / 3
    # (the batch holding only the empty frame E scores F = 0, as the published code does).
    compat = BinarySegmentationMetrics(protocol="avsbench", avsbench_batch_size=1)
    compat.update(logits[:2], target[:2], valid[:2])  # update chunks do not matter, only the parameter
    compat.update(logits[2:], target[2:], valid[2:])
    out = compat.compute()
    torch.testing.assert_close(out["mf"], torch.tensor((13 / 23 + 1 + 0) / 3, dtype=torch.float64))
    torch.testing.assert_close(out["mj"], torch.tensor((1 / 3 + 1 + 3 / 4) / 3, dtype=torch.float64), atol=1e-6, rtol=0)
    # Batches of 3 clips: one batch with the dataset-level curve over A, D -> 0.75.
    compat3 = BinarySegmentationMetrics(protocol="avsbench", avsbench_batch_size=3)
    compat3.update(logits, target, valid)
    torch.testing.assert_close(compat3.compute()["mf"], torch.tensor(0.75, dtype=torch.float64))


def test_binary_avsbench_float32_saturation() -> None:
    # G = top-left. Logits 20 (top-left) and 10 elsewhere. float64: sigmoid(20) = 1 - 2e-9 < 1 - 1e-10, so
    # the last threshold selects nothing and every other threshold selects all 4 pixels: max F = 13/43.
    # float32: sigmoid(20) == 1.0 exactly and the last threshold is 1.0, which selects the top-left alone:
    # F = 1.
    case = ([[20.0, 10.0], [10.0, 10.0]], [[1, 0], [0, 0]])
    default, compat = BinarySegmentationMetrics(), BinarySegmentationMetrics(protocol="avsbench")
    default.update(*frames(case))
    compat.update(*frames(case))
    torch.testing.assert_close(default.compute()["mf"], torch.tensor(13 / 43, dtype=torch.float64))
    torch.testing.assert_close(compat.compute()["mf"], torch.tensor(1.0, dtype=torch.float64))


def test_binary_only_valid_frames_count() -> None:
    logits, target, _ = frames(A, D)
    logits, target = logits.reshape(1, 2, 2, 2), target.reshape(1, 2, 2, 2)
    metric = BinarySegmentationMetrics()
    metric.update(logits, target, torch.tensor([[True, False]]))
    out = metric.compute()
    torch.testing.assert_close(out["mj"], torch.tensor(1 / 3, dtype=torch.float64))
    assert int(out["n_frames"]) == 1


def test_binary_merge_state_equals_one_pass() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 3, 8, 8) * 4
    target = (torch.rand(6, 3, 8, 8) > 0.6).long()
    target[1, 2] = 0
    valid = torch.rand(6, 3) > 0.2
    whole, a, b = BinarySegmentationMetrics(), BinarySegmentationMetrics(), BinarySegmentationMetrics()
    whole.update(logits, target, valid)
    a.update(logits[:2], target[:2], valid[:2])
    b.update(logits[2:], target[2:], valid[2:])
    a.merge_state(b)
    for key, value in whole.compute().items():
        torch.testing.assert_close(a.compute()[key], value)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["default", "avsbench"]))
def test_binary_scores_lie_in_unit_interval(seed: int, protocol: str) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 5, 4, generator=g) * 10
    target = (torch.rand(2, 3, 5, 4, generator=g) > 0.7).long()
    metric = BinarySegmentationMetrics(protocol=protocol)  # type: ignore[arg-type]
    metric.update(logits, target, torch.ones(2, 3, dtype=torch.bool))
    out = metric.compute()
    assert 0.0 <= float(out["mj"]) <= 1.0
    assert math.isnan(float(out["mf"])) or 0.0 <= float(out["mf"]) <= 1.0


def semantic_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """C = 5 classes (4 never appears); one clip of 3 frames, the last one padded.

    frame 0: G = [[0, 1], [1, 2]], P = [[0, 1], [2, 2]]
        class 0: IoU 1, F 1;  class 1: IoU 1/2, prec 1, rec 1/2 -> F = 0.65/0.8 = 0.8125
        class 2: IoU 1/2, prec 1/2, rec 1 -> F = 0.65/1.15 = 13/23
    frame 1: G = all 0, P = [[0, 0], [0, 3]]
        class 0: IoU 3/4, prec 1, rec 3/4 -> F = 0.975/1.05 = 13/14;  class 3: IoU 0, F 0 (seen in P)
    frame 2: padded (valid False): would add class 4 if it were evaluated.
    """
    pred = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [0, 3]], [[4, 4], [4, 4]]])
    target = torch.tensor([[[0, 1], [1, 2]], [[0, 0], [0, 0]], [[4, 4], [4, 4]]])
    logits = torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).float()[None]  # (1, 3, 5, 2, 2)
    return logits, target[None], torch.tensor([[True, True, False]])


# per class (0..4): IoU = [(1 + 3/4)/2, 1/2, 1/2, 0, unseen], F = [(1 + 13/14)/2, 0.8125, 13/23, 0, unseen]
IOU = [0.875, 0.5, 0.5, 0.0]
F = [(1 + 13 / 14) / 2, 0.8125, 13 / 23, 0.0]


@pytest.mark.parametrize(
    ("protocol", "drop_last", "miou", "miou_no_bg", "mf_no_bg"),
    [
        ("default", False, sum(IOU) / 4, sum(IOU[1:]) / 3, sum(F[1:]) / 3),  # unseen class 4 left out
        ("avsbench", False, sum(IOU) / 5, sum(IOU[1:]) / 4, sum(F[1:]) / 4),  # unseen class 4 counts as 0
        ("avsbench", True, sum(IOU) / 5, sum(IOU) / 4, sum(F) / 4),  # the anchors' bug: drops class 4
        ("default", True, sum(IOU) / 4, sum(IOU) / 4, sum(F) / 4),
    ],
)
def test_semantic_hand_computed(
    protocol: str, drop_last: bool, miou: float, miou_no_bg: float, mf_no_bg: float
) -> None:
    metric = SemanticSegmentationMetrics(num_classes=5, protocol=protocol, no_background_drops_last_class=drop_last)  # type: ignore[arg-type]
    metric.update(*semantic_case())
    out = metric.compute()
    f64 = torch.float64
    torch.testing.assert_close(out["miou"], torch.tensor(miou, dtype=f64))
    torch.testing.assert_close(out["miou_no_bg"], torch.tensor(miou_no_bg, dtype=f64))
    torch.testing.assert_close(out["mf_no_bg"], torch.tensor(mf_no_bg, dtype=f64))
    assert int(out["n_frames"]) == 2 and int(out["n_classes_seen"]) == 4
    per_class = metric.per_class()
    torch.testing.assert_close(per_class["iou"][:4], torch.tensor(IOU, dtype=f64))
    torch.testing.assert_close(per_class["f"][:4], torch.tensor(F, dtype=f64))
    assert math.isnan(float(per_class["iou"][4])) and per_class["count"].tolist() == [2, 1, 1, 1, 0]


def test_semantic_merge_and_errors() -> None:
    logits, target, valid = semantic_case()
    whole, a, b = (SemanticSegmentationMetrics(num_classes=5) for _ in range(3))
    whole.update(logits, target, valid)
    a.update(logits[:, :1], target[:, :1], valid[:, :1])
    b.update(logits[:, 1:], target[:, 1:], valid[:, 1:])
    a.merge_state(b)
    for key, value in whole.compute().items():
        torch.testing.assert_close(a.compute()[key], value)
    with pytest.raises(ValueError, match="classes"):
        SemanticSegmentationMetrics(num_classes=4).update(logits, target, valid)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        SemanticSegmentationMetrics(num_classes=5).update(logits, target + 1, torch.ones(1, 3, dtype=torch.bool))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["default", "avsbench"]))
def test_semantic_scores_lie_in_unit_interval(seed: int, protocol: str) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 2, 6, 4, 4, generator=g)
    target = torch.randint(0, 6, (2, 2, 4, 4), generator=g)
    metric = SemanticSegmentationMetrics(num_classes=6, protocol=protocol)  # type: ignore[arg-type]
    metric.update(logits, target, torch.ones(2, 2, dtype=torch.bool))
    for key in ("miou", "mf", "miou_no_bg", "mf_no_bg"):
        assert 0.0 <= float(metric.compute()[key]) <= 1.0
