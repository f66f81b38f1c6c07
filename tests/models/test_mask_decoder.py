import pytest
import torch

from avtoolkit.models.segmentation.base import MaskPrediction
from avtoolkit.models.segmentation.mask_decoder import (
    MaskedAttentionDecoder,
    MaskedAttentionLayer,
    attention_mask_from_logits,
    semantic_inference,
)

DIM, Q = 32, 4


def tiny(num_classes: int = 1, layers: int = 2, levels: int = 3) -> MaskedAttentionDecoder:
    return MaskedAttentionDecoder(
        dim=DIM, num_queries=Q, num_classes=num_classes, layers=layers, heads=4, ffn_dim=48, levels=levels
    )


def inputs(N=2, H=32, W=48, levels=3, seed=0):
    """Queries, coarse-to-fine memory (strides 32, 16, 8 of an H×W image… scaled down) and stride-4 mask features."""
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(N, Q, DIM, generator=g)
    memory = [torch.randn(N, DIM, H // s, W // s, generator=g) for s in (32, 16, 8)[:levels]]
    mask_features = torch.randn(N, DIM, H // 4, W // 4, generator=g)
    return queries, memory, mask_features


@pytest.mark.parametrize("num_classes", [1, 5])
@pytest.mark.parametrize(("H", "W"), [(32, 48), (64, 32)])
def test_shapes_and_count(num_classes, H, W):
    torch.manual_seed(0)
    dec = tiny(num_classes=num_classes)
    queries, memory, mask_features = inputs(H=H, W=W)
    predictions = dec(queries, memory, mask_features)
    assert len(predictions) == 2 + 1
    for p in predictions:
        assert p.class_logits.shape == (2, Q, num_classes + 1)
        assert p.mask_logits.shape == (2, Q, H // 4, W // 4)
        assert torch.isfinite(p.class_logits).all() and torch.isfinite(p.mask_logits).all()


def test_more_layers_than_levels_cycle_round_robin():
    torch.manual_seed(0)
    dec = tiny(layers=5, levels=2)
    queries, memory, mask_features = inputs(levels=2)
    assert len(dec(queries, memory, mask_features)) == 6


def test_first_prediction_reads_only_the_queries():
    torch.manual_seed(0)
    dec = tiny().eval()
    queries, memory, mask_features = inputs()
    a = dec(queries, memory, mask_features)
    b = dec(queries, [torch.randn_like(m) for m in memory], mask_features)
    torch.testing.assert_close(a[0].class_logits, b[0].class_logits)
    torch.testing.assert_close(a[0].mask_logits, b[0].mask_logits)
    assert not torch.allclose(a[-1].class_logits, b[-1].class_logits)  # the layers do read the memory
    # The initial masks are linear in the mask features (mask embedding · features).
    c = dec(queries, memory, 3 * mask_features)
    torch.testing.assert_close(c[0].mask_logits, 3 * a[0].mask_logits, rtol=1e-5, atol=1e-5)


def test_first_prediction_is_the_prediction_head_on_the_initial_queries():
    torch.manual_seed(0)
    dec = tiny().eval()
    queries, memory, mask_features = inputs()
    first = dec(queries, memory, mask_features)[0]
    direct = dec.predict(queries, mask_features)
    torch.testing.assert_close(first.class_logits, direct.class_logits)
    torch.testing.assert_close(first.mask_logits, direct.mask_logits)


def test_gradients_reach_inputs_and_parameters():
    torch.manual_seed(0)
    dec = tiny(layers=3)  # one layer per level, so every level is read
    queries, memory, mask_features = inputs()
    for tensor in [queries, mask_features, *memory]:
        tensor.requires_grad_()
    predictions = dec(queries, memory, mask_features)
    sum(p.class_logits.sum() + p.mask_logits.sum() for p in predictions).backward()
    for tensor in [queries, mask_features, *memory]:
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    for name, parameter in dec.named_parameters():
        assert parameter.grad is not None, name


def test_attention_mask_rule():
    logits = torch.full((1, 3, 4, 4), -5.0)
    logits[0, 0, :2, :] = 5.0  # query 0: foreground in the top half
    logits[0, 2] = 5.0  # query 2: foreground everywhere; query 1: nowhere
    mask = attention_mask_from_logits(logits, (4, 4))
    assert mask.shape == (1, 3, 16) and mask.dtype == torch.bool
    expected_q0 = torch.zeros(4, 4, dtype=torch.bool)
    expected_q0[2:, :] = True  # masked where sigmoid < 0.5
    assert torch.equal(mask[0, 0], expected_q0.flatten())  # row-major like the memory tokens
    assert not mask[0, 1].any()  # fully masked row → unmasked
    assert not mask[0, 2].any()
    # Bilinear resize to the level's grid: top half of a 2×3 grid stays the top row.
    small = attention_mask_from_logits(logits, (2, 3))
    assert torch.equal(small[0, 0], torch.tensor([False] * 3 + [True] * 3))
    assert not small[0, 1].any()


def test_attention_mask_threshold_is_at_probability_half():
    logits = torch.tensor([[[[-0.01, 0.0, 0.01, -3.0]]]])
    assert attention_mask_from_logits(logits, (1, 4)).tolist() == [[[True, False, False, True]]]
    logits.requires_grad_()
    assert not attention_mask_from_logits(logits, (1, 4)).requires_grad


def test_masked_positions_do_not_reach_the_queries():
    torch.manual_seed(0)
    layer = MaskedAttentionLayer(DIM, heads=4, ffn_dim=48, dropout=0.0).eval()
    query, query_pos = torch.randn(2, Q, DIM), torch.randn(Q, DIM)
    memory, memory_pos = torch.randn(2, 10, DIM), torch.randn(10, DIM)
    mask = torch.zeros(2, Q, 10, dtype=torch.bool)
    mask[:, :, 6:] = True  # every query may read only tokens 0..5
    changed = memory.clone()
    changed[:, 6:] = torch.randn(2, 4, DIM)
    out = layer(query, query_pos, memory, memory_pos, mask)
    torch.testing.assert_close(layer(query, query_pos, changed, memory_pos, mask), out)
    assert not torch.allclose(
        layer(query, query_pos, changed, memory_pos, None), layer(query, query_pos, memory, memory_pos, None)
    )
    # Per frame: masking differs between frames, so the head/frame layout of the mask must be right.
    mask2 = mask.clone()
    mask2[1] = False
    out2 = layer(query, query_pos, changed, memory_pos, mask2)
    torch.testing.assert_close(out2[0], out[0])
    assert not torch.allclose(out2[1], out[1])


def test_saturated_masks_stay_finite():
    torch.manual_seed(0)
    dec = tiny()
    queries, memory, mask_features = inputs()
    predictions = dec(queries, memory, 1e3 * mask_features)  # many rows fully masked or fully open
    assert all(torch.isfinite(p.mask_logits).all() and torch.isfinite(p.class_logits).all() for p in predictions)


def test_invalid_arguments_name_the_problem():
    with pytest.raises(ValueError, match="heads"):
        MaskedAttentionDecoder(dim=32, heads=3)
    with pytest.raises(ValueError, match="multiple of 4"):
        MaskedAttentionDecoder(dim=30, heads=3)
    dec = tiny()
    queries, memory, mask_features = inputs()
    with pytest.raises(ValueError, match="levels=3"):
        dec(queries, memory[:2], mask_features)
    with pytest.raises(ValueError, match="queries"):
        dec(queries[:, :3], memory, mask_features)
    with pytest.raises(ValueError, match="mask_features"):
        dec(queries, memory, mask_features[:, :16])


def test_semantic_inference_on_crafted_logits():
    class_logits = torch.tensor([[[20.0, -20.0, -20.0], [-20.0, -20.0, 20.0], [-20.0, 20.0, -20.0]]])  # K = 2
    mask_logits = torch.full((1, 3, 2, 4), -20.0)
    mask_logits[0, 0, :, :2] = 20.0  # class-0 query: left half
    mask_logits[0, 1] = 20.0  # no-object query covering everything: ignored
    mask_logits[0, 2, :, 3] = 20.0  # class-1 query: last column
    scores = semantic_inference(MaskPrediction(class_logits, mask_logits))
    assert scores.shape == (1, 2, 2, 4)
    expected = torch.zeros(1, 2, 2, 4)
    expected[0, 0, :, :2] = 1
    expected[0, 1, :, 3] = 1
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    # Equal class probabilities split a mask evenly; scores never exceed the number of queries.
    torch.manual_seed(0)
    random = MaskPrediction(torch.zeros(2, 5, 4), 5 * torch.randn(2, 5, 3, 3))
    scores = semantic_inference(random)
    torch.testing.assert_close(scores[:, 0], scores[:, 2])
    torch.testing.assert_close(scores.sum(1), 0.75 * random.mask_logits.sigmoid().sum(1))
