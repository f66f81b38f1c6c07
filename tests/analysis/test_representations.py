import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.analysis.representations import linear_probe, modality_gap, pooled_features

# --- modality gap ------------------------------------------------------------------------------------------------


def test_modality_gap_by_hand():
    audio = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    visual = torch.tensor([[0.0, 3.0]])
    # normalised: audio rows -> (1, 0), (1, 0), mean (1, 0); visual -> (0, 1): gap = |(1, -1)| = sqrt(2)
    assert modality_gap(audio, visual) == pytest.approx(math.sqrt(2))
    # raw means: (1.5, 0) and (0, 3): gap = sqrt(1.5² + 3²) = sqrt(11.25)
    assert modality_gap(audio, visual, normalize=False) == pytest.approx(math.sqrt(11.25))
    # opposite directions: (1, 0) vs (-1, 0) -> 2, the largest gap on the unit sphere
    assert modality_gap(torch.tensor([[3.0, 0.0]]), torch.tensor([[-0.5, 0.0]])) == pytest.approx(2.0)
    # centroids that cancel: audio (1, 0), (-1, 0) -> mean 0; visual (0, 1) -> gap 1
    assert modality_gap(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([[0.0, 2.0]])) == pytest.approx(1.0)


embeddings = (
    st.integers(1, 6)
    .flatmap(lambda n: st.lists(st.lists(st.floats(-10, 10), min_size=3, max_size=3), min_size=n, max_size=n))
    .filter(lambda rows: all(math.hypot(*r) > 1e-3 for r in rows))
)


@settings(max_examples=50, deadline=None)
@given(a=embeddings, v=embeddings, scale=st.floats(0.01, 100))
def test_modality_gap_properties(a, v, scale):
    A, V = torch.tensor(a, dtype=torch.float64), torch.tensor(v, dtype=torch.float64)
    gap = modality_gap(A, V)
    assert 0 <= gap <= 2 + 1e-9
    assert gap == pytest.approx(modality_gap(V, A))  # symmetric
    assert modality_gap(scale * A, V) == pytest.approx(gap, abs=1e-9)  # normalised: scale invariant
    assert modality_gap(A, A) == pytest.approx(0.0, abs=1e-9)
    # the raw gap is the distance between the raw means and scales with the embeddings
    assert modality_gap(scale * A, scale * V, normalize=False) == pytest.approx(
        scale * modality_gap(A, V, normalize=False), rel=1e-9, abs=1e-9
    )


def test_modality_gap_errors():
    with pytest.raises(ValueError, match="sizes differ"):
        modality_gap(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="zero vectors"):
        modality_gap(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.ones(1, 2))
    assert modality_gap(torch.tensor([[0.0, 0.0]]), torch.ones(1, 2), normalize=False) == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError, match="empty"):
        modality_gap(torch.ones(0, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        modality_gap(torch.ones(3), torch.ones(2, 3))


# --- pooled features ---------------------------------------------------------------------------------------------


def test_pooled_features():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    # item 0, channel 0 holds 0, 1, 2, 3 -> 1.5; every next channel adds 4; item 1 adds 12
    expected = torch.tensor([[1.5, 5.5, 9.5], [13.5, 17.5, 21.5]])
    assert torch.equal(pooled_features(maps), expected)
    assert torch.equal(pooled_features([maps[:1], maps[1:]]), expected)  # per-batch lists are concatenated
    assert torch.equal(pooled_features(maps.flatten(2)), expected)  # any number of spatial dims
    assert torch.equal(pooled_features(expected), expected)  # already (n, C)
    with pytest.raises(ValueError, match="differ"):
        pooled_features([torch.ones(1, 3, 2, 2), torch.ones(1, 4, 2, 2)])
    with pytest.raises(ValueError, match="empty"):
        pooled_features([])


# --- linear probe ------------------------------------------------------------------------------------------------


def blobs(n_per_class: int, n_classes: int, d: int, separation: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = separation * torch.eye(n_classes, d)
    x = torch.cat([centres[c] + torch.randn(n_per_class, d, generator=g) for c in range(n_classes)])
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return x, y


def test_probe_on_separable_classes():
    x, y = blobs(30, 3, 8, separation=12.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convergence or deprecation warnings from scikit-learn
        result = linear_probe(x, y)
    # 90 samples, ceil(0.3 · 90) = 27 test samples, stratified: 9 per class -> majority baseline 9/27
    assert (result.n_train, result.n_test, result.n_classes) == (63, 27, 3)
    assert result.chance == pytest.approx(1 / 3)
    assert result.train_accuracy == 1.0 and result.test_accuracy == 1.0


def test_probe_on_uninformative_features_is_near_chance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 4, generator=g)
    y = torch.randint(0, 2, (300,), generator=g)
    result = linear_probe(x, y, seed=3)
    assert abs(result.test_accuracy - 0.5) < 0.15
    assert 0.4 < result.chance < 0.6


def test_probe_accepts_string_labels_and_is_seeded():
    x, y = blobs(10, 2, 4, separation=1.0)
    names = ["flute" if int(v) else "cello" for v in y]  # same sorted order as 0, 1
    a, b = linear_probe(x, names, seed=5), linear_probe(x, y, seed=5)
    assert a == b  # the same split and fit whatever the label type
    assert linear_probe(x, y, seed=5) == a


def test_probe_errors():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe(x, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"at least 2 samples.*\[2\]"):
        linear_probe(x, torch.tensor([0] * 5 + [1] * 4 + [2]))
    with pytest.raises(ValueError, match="each split"):
        linear_probe(x, torch.tensor([0, 1, 2, 3, 4] * 2), test_fraction=0.3)  # 3 test samples for 5 classes
    with pytest.raises(ValueError, match="labels"):
        linear_probe(x, torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="test_fraction"):
        linear_probe(x, torch.tensor([0, 1] * 5), test_fraction=1.0)
