import math

import torch

from avtoolkit.losses.masks import mask_weight, weighted_bce, weighted_l1


def test_mask_weight_is_clamped_log1p():
    magnitude = torch.tensor([0.0, math.e - 1, 1e6])
    assert torch.allclose(mask_weight(magnitude), torch.tensor([1e-3, 1.0, 10.0]))


def test_weighted_l1_by_hand():
    prediction = torch.tensor([0.0, 1.0, 2.0])
    target = torch.tensor([1.0, 1.0, 0.0])
    weight = torch.tensor([1.0, 5.0, 0.5])
    assert torch.isclose(weighted_l1(prediction, target, weight), torch.tensor((1.0 + 0.0 + 1.0) / 3))


def test_weighted_bce_by_hand():
    logits = torch.tensor([0.0, 0.0])
    target = torch.tensor([1.0, 0.0])
    weight = torch.tensor([2.0, 0.0])
    assert torch.isclose(weighted_bce(logits, target, weight), torch.tensor(math.log(2.0)))
