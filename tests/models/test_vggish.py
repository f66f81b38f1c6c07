from pathlib import Path

import pytest
import torch

from avtoolkit.models.encoders.vggish import VGGish

PORT_KEYS = [
    f"{module}.{index}.{kind}"
    for module, indices in (("features", (0, 3, 6, 8, 11, 13)), ("embeddings", (0, 2, 4)))
    for index in indices
    for kind in ("weight", "bias")
]


def log_mel(N=2, seed=0):
    return torch.randn(N, 1, 96, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def full_size(tmp_path_factory) -> tuple[VGGish, Path]:
    """A width-1 VGGish and its state dict saved with the port's PCA post-processing keys (as the port ships)."""
    torch.manual_seed(0)
    model = VGGish().eval()
    state = model.state_dict()
    state["pproc._pca_matrix"] = torch.randn(128, 128)
    state["pproc._pca_means"] = torch.randn(128, 1)
    path = tmp_path_factory.mktemp("vggish") / "vggish-port.pth"
    torch.save(state, path)
    return model, path


def test_parameter_names_follow_the_pytorch_port():
    assert list(VGGish(width=0.125).state_dict()) == PORT_KEYS


@pytest.mark.parametrize(
    ("width", "channels"), [(1.0, (64, 128, 256, 256, 512, 512)), (0.125, (8, 16, 32, 32, 64, 64))]
)
def test_width_scales_the_convolutions_and_the_first_linear(width, channels, full_size):
    model = full_size[0] if width == 1.0 else VGGish(width=width)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert tuple(c.out_channels for c in convs) == channels
    assert model.feature_channels == channels[-1]
    assert model.embeddings[0].in_features == channels[-1] * 6 * 4
    assert model.embeddings[0].out_features == 4096 and model.embeddings[4].out_features == 128


@pytest.mark.parametrize("width", [0.125, 0.25])
def test_output_shapes(width):
    torch.manual_seed(0)
    model = VGGish(width=width)
    feature_map, embedding = model(log_mel(N=3))
    assert feature_map.shape == (3, model.feature_channels, 6, 4)
    assert embedding.shape == (3, 128)
    assert (embedding >= 0).all() and (feature_map >= 0).all()  # both end with a ReLU (and a max-pool)


def test_embedding_flattens_the_feature_map_in_tensorflow_order():
    torch.manual_seed(0)
    model = VGGish(width=0.125)
    # Bias the last layer so the final ReLU keeps the embeddings distinguishable.
    torch.nn.init.constant_(model.embeddings[4].bias, 1.0)
    feature_map, embedding = model(log_mel())
    channels_last = model.embeddings(feature_map.permute(0, 2, 3, 1).flatten(1))  # (N, 6, 4, C) flattened
    torch.testing.assert_close(embedding, channels_last)
    channels_first = model.embeddings(feature_map.flatten(1))  # PyTorch's (C, 6, 4) order: different weights' meaning
    assert not torch.allclose(embedding, channels_first, atol=1e-4)


def test_loads_the_port_state_dict_and_ignores_post_processing_keys(full_size):
    model, path = full_size
    loaded = VGGish(weights=str(path)).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = log_mel(N=1)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=0)


def test_mismatched_files_raise_naming_the_file_and_the_keys(tmp_path):
    state = VGGish(width=0.125).state_dict()  # every port key, narrow shapes
    del state["embeddings.4.bias"]
    state["classifier.weight"] = torch.zeros(3, 3)  # not post-processing: not ignored
    path = tmp_path / "other-model.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"other-model\.pth") as error:
        VGGish(weights=str(path))
    message = str(error.value)
    assert "missing keys (first: embeddings.4.bias)" in message
    assert "unexpected keys (first: classifier.weight)" in message
    assert "shape mismatches (first: features.0.weight: file (8, 1, 3, 3) vs model (64, 1, 3, 3)" in message


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        VGGish(weights=str(tmp_path / "nowhere.pth"))
    narrow = tmp_path / "narrow.pth"
    torch.save(VGGish(width=0.125).state_dict(), narrow)
    with pytest.raises(ValueError, match=r"narrow\.pth.*shape mismatches"):  # saved at another width
        VGGish(weights=str(narrow), width=0.5)
    for width in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError, match="width"):
            VGGish(width=width)
    model = VGGish(width=0.125)
    for shape in ((2, 96, 64), (2, 1, 64, 96), (2, 3, 96, 64), (2, 1, 1, 96, 64)):
        with pytest.raises(ValueError, match=r"\(N, 1, 96, 64\)"):
            model(torch.zeros(shape))


def test_freeze_turns_off_gradients_and_stays_in_eval_mode():
    torch.manual_seed(0)
    frozen = VGGish(width=0.125, freeze=True)
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert not any(m.training for m in frozen.modules())
    _, embedding = frozen(log_mel())
    assert not embedding.requires_grad

    trainable = VGGish(width=0.125)
    trainable.train()
    assert all(m.training for m in trainable.modules())
    torch.nn.init.constant_(trainable.embeddings[4].bias, 1.0)  # keep the last ReLU open for the gradient
    feature_map, embedding = trainable(log_mel())
    (feature_map.sum() + embedding.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.parameters())


def test_without_embedding_reads_the_feature_map_and_loads_full_weights(tmp_path):
    torch.manual_seed(0)
    full = VGGish()
    path = tmp_path / "vggish.pth"
    torch.save(full.state_dict(), path)
    trunk = VGGish(str(path), with_embedding=False)
    assert not any(name.startswith("embeddings") for name, _ in trunk.named_parameters())
    x = torch.randn(2, 1, 96, 64)
    torch.testing.assert_close(trunk.feature_map(x), full(x)[0])
    with pytest.raises(ValueError, match="with_embedding=False"):
        trunk(x)
