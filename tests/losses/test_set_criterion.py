import pytest
import torch
import torch.nn.functional as F

from avtoolkit.losses.set_criterion import (
    HungarianMatcher,
    SetCriterion,
    masks_to_targets,
    pixel_centre_points,
    point_sample,
    uncertain_points,
)
from avtoolkit.models.segmentation.base import MaskPrediction

K = 3  # classes; class index K is "no object"
S = 8  # mask side
BIG = 20.0


def crafted_targets() -> list[dict[str, torch.Tensor]]:
    """Frame 0: left half (class 0) and top-right quadrant (class 2); frame 1: bottom-right quadrant (class 1)."""
    left = torch.zeros(S, S)
    left[:, : S // 2] = 1
    top_right = torch.zeros(S, S)
    top_right[: S // 2, S // 2 :] = 1
    bottom_right = torch.zeros(S, S)
    bottom_right[S // 2 :, S // 2 :] = 1
    return [
        {"labels": torch.tensor([0, 2]), "masks": torch.stack([left, top_right])},
        {"labels": torch.tensor([1]), "masks": bottom_right[None]},
    ]


# Which query predicts which target: frame 0: query 2 → target 0, query 0 → target 1; frame 1: query 3 → target 0.
ASSIGNMENT = [{2: 0, 0: 1}, {3: 0}]


def crafted_prediction(targets, scale: float = BIG, Q: int = 4, seed: int = 0) -> MaskPrediction:
    """A confident, correct prediction: matched queries reproduce their target, the others say "no object"."""
    g = torch.Generator().manual_seed(seed)
    N = len(targets)
    class_logits = torch.full((N, Q, K + 1), -scale)
    class_logits[:, :, K] = scale  # no object by default
    mask_logits = scale * (2 * (torch.rand(N, Q, S, S, generator=g) > 0.5).float() - 1)  # unmatched: noise
    for frame, pairs in enumerate(ASSIGNMENT[:N]):
        for query, target in pairs.items():
            class_logits[frame, query] = -scale
            class_logits[frame, query, targets[frame]["labels"][target]] = scale
            mask_logits[frame, query] = scale * (2 * targets[frame]["masks"][target] - 1)
    return MaskPrediction(class_logits=class_logits, mask_logits=mask_logits)


def as_dict(matches):
    return [dict(zip(q.tolist(), t.tolist(), strict=True)) for q, t in matches]


@pytest.mark.parametrize("num_points", [None, 64])
def test_matching_finds_the_obvious_assignment(num_points):
    torch.manual_seed(0)
    targets = crafted_targets()
    matches = HungarianMatcher(num_points=num_points)(crafted_prediction(targets), targets)
    assert as_dict(matches) == ASSIGNMENT
    for q, t in matches:
        assert q.dtype == t.dtype == torch.int64 and torch.equal(q, q.sort().values)


def test_matching_is_invariant_to_query_order():
    torch.manual_seed(0)
    targets = crafted_targets()
    prediction = crafted_prediction(targets, scale=3.0)  # less confident: costs are not saturated
    permutation = torch.tensor([3, 0, 1, 2])  # new query i is old query permutation[i]
    permuted = MaskPrediction(prediction.class_logits[:, permutation], prediction.mask_logits[:, permutation])
    matcher = HungarianMatcher(num_points=None)
    original = as_dict(matcher(prediction, targets))
    for frame, pairs in enumerate(as_dict(matcher(permuted, targets))):
        assert {int(permutation[q]): t for q, t in pairs.items()} == original[frame]


def test_point_and_full_mode_agree_on_clear_matches():
    torch.manual_seed(0)
    targets = crafted_targets()
    prediction = crafted_prediction(targets, scale=4.0, seed=3)
    full = as_dict(HungarianMatcher(num_points=None)(prediction, targets))
    for seed in range(3):
        torch.manual_seed(seed)
        assert as_dict(HungarianMatcher(num_points=32)(prediction, targets)) == full == ASSIGNMENT


def test_more_targets_than_queries_match_every_query():
    torch.manual_seed(0)
    masks = torch.arange(5)[:, None, None].expand(5, S, S).eq(torch.randint(0, 5, (S, S))).float()
    targets = [{"labels": torch.zeros(5, dtype=torch.int64), "masks": masks}]
    prediction = MaskPrediction(torch.randn(1, 3, K + 1), torch.randn(1, 3, S, S))
    ((q, t),) = HungarianMatcher(num_points=None)(prediction, targets)
    assert q.tolist() == [0, 1, 2] and len(set(t.tolist())) == 3


def test_perfect_prediction_reaches_the_lower_bound():
    targets = crafted_targets()
    losses = SetCriterion(num_points=None)([crafted_prediction(targets)], targets)
    assert set(losses) == {"loss_class", "loss_mask", "loss_dice", "loss"}
    for value in losses.values():
        assert 0 <= float(value) < 1e-4


@pytest.mark.parametrize("num_points", [None, 256])
def test_perturbed_prediction_costs_more(num_points):
    targets = crafted_targets()
    perfect = crafted_prediction(targets)
    blurred = crafted_prediction(targets)
    blurred.mask_logits[0, 2, :, S // 2 - 1] *= -1  # one column of a matched mask flipped
    unsure = crafted_prediction(targets)
    unsure.class_logits[1, 3] = 0.0  # matched query no longer sure of its class
    criterion = SetCriterion(num_points=num_points)
    torch.manual_seed(0)
    base = criterion([perfect], targets)
    torch.manual_seed(0)
    worse_mask = criterion([blurred], targets)
    torch.manual_seed(0)
    worse_class = criterion([unsure], targets)
    assert worse_mask["loss_mask"] > base["loss_mask"] and worse_mask["loss_dice"] > base["loss_dice"]
    assert worse_class["loss_class"] > base["loss_class"]
    assert worse_mask["loss"] > base["loss"] and worse_class["loss"] > base["loss"]


def test_losses_are_weighted_and_summed():
    torch.manual_seed(0)
    targets = crafted_targets()
    prediction = crafted_prediction(targets, scale=2.0)  # clear-cut: both weightings give the same matching
    prediction.mask_logits.add_(0.5 * torch.randn_like(prediction.mask_logits))
    unit = SetCriterion(class_weight=1.0, mask_weight=1.0, dice_weight=1.0, num_points=None)
    weighted = SetCriterion(class_weight=2.0, mask_weight=5.0, dice_weight=3.0, num_points=None)
    assert as_dict(unit.matcher(prediction, targets)) == as_dict(weighted.matcher(prediction, targets)) == ASSIGNMENT
    base, out = unit([prediction], targets), weighted([prediction], targets)
    torch.testing.assert_close(out["loss"], out["loss_class"] + out["loss_mask"] + out["loss_dice"])
    torch.testing.assert_close(out["loss_class"], 2 * base["loss_class"])
    torch.testing.assert_close(out["loss_mask"], 5 * base["loss_mask"])
    torch.testing.assert_close(out["loss_dice"], 3 * base["loss_dice"])


def test_class_loss_is_weighted_cross_entropy_against_no_object():
    torch.manual_seed(0)
    targets = crafted_targets()
    prediction = crafted_prediction(targets, scale=2.0)
    prediction.class_logits.add_(torch.randn_like(prediction.class_logits))
    criterion = SetCriterion(class_weight=1.0, no_object_weight=0.1, num_points=None)
    classes = torch.full((2, 4), K)
    for frame, pairs in enumerate(ASSIGNMENT):
        for query, target in pairs.items():
            classes[frame, query] = targets[frame]["labels"][target]
    ce = F.cross_entropy(prediction.class_logits.flatten(0, 1), classes.flatten(), reduction="none")
    w = torch.where(classes.flatten() == K, 0.1, 1.0)
    torch.testing.assert_close(criterion([prediction], targets)["loss_class"], (w * ce).sum() / w.sum())


def test_frames_without_instances():
    torch.manual_seed(0)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, S, S)}
    class_logits = torch.randn(2, 4, K + 1, requires_grad=True)
    mask_logits = torch.randn(2, 4, S, S, requires_grad=True)
    prediction = MaskPrediction(class_logits, mask_logits)
    for num_points in (None, 64):
        losses = SetCriterion(num_points=num_points)([prediction], [empty, empty])
        assert losses["loss_mask"].item() == losses["loss_dice"].item() == 0.0
        all_no_object = F.cross_entropy(class_logits.detach().flatten(0, 1), torch.full((8,), K))
        torch.testing.assert_close(losses["loss_class"], 2.0 * all_no_object)
        losses["loss"].backward()
        assert class_logits.grad is not None and class_logits.grad.abs().sum() > 0
        assert mask_logits.grad is not None  # attached (zero) so DDP sees every parameter used
        class_logits.grad = mask_logits.grad = None
    # A mix of an empty and a non-empty frame: the empty frame adds only class terms.
    targets = crafted_targets()
    mixed = SetCriterion(num_points=None)([crafted_prediction(targets)], [targets[0], empty])
    assert torch.isfinite(mixed["loss"]) and float(mixed["loss_mask"]) < 1e-4


def test_no_frames_give_zero_losses():
    class_logits = torch.randn(0, 4, K + 1, requires_grad=True)
    mask_logits = torch.randn(0, 4, S, S, requires_grad=True)
    losses = SetCriterion(num_points=64)([MaskPrediction(class_logits, mask_logits)] * 2, [])
    assert all(v.item() == 0.0 for v in losses.values())
    losses["loss"].backward()
    assert class_logits.grad is not None and mask_logits.grad is not None


def test_duplicating_the_batch_leaves_the_loss_unchanged():
    torch.manual_seed(0)
    targets = crafted_targets()
    prediction = crafted_prediction(targets, scale=1.5)
    prediction.mask_logits.add_(torch.randn_like(prediction.mask_logits))
    criterion = SetCriterion(num_points=None)
    doubled = MaskPrediction(prediction.class_logits.repeat(2, 1, 1), prediction.mask_logits.repeat(2, 1, 1, 1))
    one, two = criterion([prediction], targets), criterion([doubled], targets + targets)
    for key in one:
        torch.testing.assert_close(two[key], one[key])  # mask terms normalised by the number of instances


def test_deep_supervision_sums_per_prediction_losses():
    torch.manual_seed(0)
    targets = crafted_targets()
    predictions = [
        MaskPrediction(torch.randn(2, 4, K + 1), torch.randn(2, 4, S // 2, S // 2)),  # stride: upsampled to S
        crafted_prediction(targets, scale=2.0),
        MaskPrediction(torch.randn(2, 4, K + 1), torch.randn(2, 4, S, S)),
    ]
    criterion = SetCriterion(num_points=None)
    together = criterion(predictions, targets)
    separate = [criterion([p], targets) for p in predictions]
    for key in together:
        torch.testing.assert_close(together[key], sum(s[key] for s in separate))


@pytest.mark.parametrize("num_points", [None, 128])
def test_gradients_flow_to_class_and_mask_logits(num_points):
    torch.manual_seed(0)
    targets = crafted_targets()
    class_logits = torch.randn(2, 4, K + 1, requires_grad=True)
    mask_logits = torch.randn(2, 4, S // 2, S // 2, requires_grad=True)  # lower resolution than the targets
    losses = SetCriterion(num_points=num_points)([MaskPrediction(class_logits, mask_logits)], targets)
    losses["loss"].backward()
    assert class_logits.grad is not None and class_logits.grad.abs().sum() > 0
    assert mask_logits.grad is not None
    matched = [(0, 0), (0, 1), (1, 0)]  # at most 3 matched queries have a mask gradient
    grads = mask_logits.grad.abs().sum(dim=(2, 3))
    assert (grads > 0).sum() == len(matched)


def test_point_sample_at_pixel_centres_is_bilinear_resizing():
    torch.manual_seed(0)
    maps = torch.randn(3, 5, 7)
    torch.testing.assert_close(point_sample(maps, pixel_centre_points(5, 7)).reshape(3, 5, 7), maps)
    for size in [(10, 14), (3, 4), (8, 5)]:
        expected = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
        got = point_sample(maps, pixel_centre_points(*size)).reshape(3, *size)
        torch.testing.assert_close(got, expected)


def test_uncertain_points_prefer_uncertain_regions():
    torch.manual_seed(0)
    logits = torch.full((2, 16, 16), 10.0)
    logits[:, :, 6:10] = 0.0  # an uncertain vertical band
    points = uncertain_points(logits, num_points=100, oversample_ratio=3.0, importance_sample_ratio=0.75)
    assert points.shape == (2, 100, 2) and points.min() >= 0 and points.max() <= 1
    values = point_sample(logits, points).abs()
    assert values[:, :75].mean() < 0.5 * values[:, 75:].mean()


def test_masks_to_targets_binary():
    masks = torch.zeros(2, 4, 5, dtype=torch.int64)
    masks[0, 1:3, 2:] = 1
    targets = masks_to_targets(masks, num_classes=1)
    assert targets[0]["labels"].tolist() == [0]
    assert targets[0]["masks"].dtype == torch.float32 and torch.equal(targets[0]["masks"][0], masks[0].float())
    assert targets[1]["labels"].shape == (0,) and targets[1]["labels"].dtype == torch.int64
    assert targets[1]["masks"].shape == (0, 4, 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masks_to_targets(masks + 1, num_classes=1)


def test_masks_to_targets_semantic():
    masks = torch.zeros(2, 4, 4, dtype=torch.int64)
    masks[0, :2, :2] = 3
    masks[0, 3, :] = 5
    masks[1] = 4  # no background pixel at all
    targets = masks_to_targets(masks, num_classes=6)
    assert targets[0]["labels"].tolist() == [0, 3, 5] and targets[1]["labels"].tolist() == [4]
    for frame, target in enumerate(targets):
        torch.testing.assert_close(target["masks"].sum(0), torch.ones(4, 4))  # instances partition the frame
        for label, mask in zip(target["labels"], target["masks"], strict=True):
            assert torch.equal(mask.bool(), masks[frame] == label)
    with pytest.raises(ValueError, match="num_classes=6"):
        masks_to_targets(torch.full((1, 2, 2), 6), num_classes=6)


def test_invalid_targets_and_arguments():
    targets = crafted_targets()
    prediction = crafted_prediction(targets)
    with pytest.raises(ValueError, match="labels outside"):
        SetCriterion(num_points=None)(
            [MaskPrediction(prediction.class_logits[..., 1:], prediction.mask_logits)], targets
        )
    with pytest.raises(ValueError, match="one per frame"):
        SetCriterion(num_points=None)([prediction], targets[:1])
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        SetCriterion(importance_sample_ratio=1.5)
    with pytest.raises(ValueError, match="oversample_ratio"):
        SetCriterion(oversample_ratio=0.5)
