"""Weights that do not fit stop the run, naming the file, the model and the keys; a frozen random VGGish warns."""

import logging
import re
import warnings

import pytest
import timm
import torch
from fixtures.tiny_models import TINY_FAVS

from avtoolkit.errors import ConfigError
from avtoolkit.models.encoders.multiscale import MultiScaleBackbone
from avtoolkit.models.encoders.vggish import VGGish
from avtoolkit.models.encoders.visual import PooledFrameEncoder
from avtoolkit.models.segmentation.favs import FAVS

FIT = "Check that the file is a checkpoint of this architecture (backbone_weights and the backbone's name must match)."


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """State dicts of whole timm models (with their classifier), as timm's own weight files are."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for name in ("test_resnet", "test_convnext"):
        torch.manual_seed(1)
        files[name] = folder / f"{name}.pth"
        torch.save(timm.create_model(name).state_dict(), files[name])
    return files


def first(keys):
    return ", ".join(keys[:5])


def loaded_keys(keys):
    """The keys torch reports missing when a file lacks them (BatchNorm fills in its ``num_batches_tracked``)."""
    return [k for k in keys if not k.endswith("num_batches_tracked")]


def test_weights_of_another_architecture_stop_naming_file_model_and_keys(weights, caplog):
    path = weights["test_convnext"]
    resnet = loaded_keys([k for k in timm.create_model("test_resnet").state_dict() if not k.startswith("fc.")])
    convnext = list(torch.load(path, weights_only=True))
    message = (
        f"weights {path} do not fit the timm architecture 'test_resnet': {len(resnet)} missing keys (first: "
        f"{first(resnet)}); {len(convnext)} unexpected keys (first: {first(convnext)}). {FIT}"
    )
    assert first(resnet).startswith("conv1.0.weight, ") and first(convnext).startswith("stem.0.weight, ")
    caplog.set_level(logging.INFO)
    with pytest.raises(ConfigError) as error:
        MultiScaleBackbone("test_resnet", str(path))
    assert str(error.value) == message
    assert "keys" not in caplog.text, "timm's own 'may be expected' lines are replaced by the error"
    with pytest.raises(ConfigError, match=re.escape(message)):  # the dilated frame encoder of the separation models
        PooledFrameEncoder("test_resnet", out_channels=4, output_stride=16, weights=str(path))
    with pytest.raises(ConfigError, match=re.escape(message)):  # as a model's backbone_weights
        FAVS(num_classes=1, **{**TINY_FAVS, "backbone_weights": str(path)})


def test_matching_weights_load_with_or_without_a_classifier(weights, tmp_path):
    state = torch.load(weights["test_resnet"], weights_only=True)
    loaded = MultiScaleBackbone("test_resnet", str(weights["test_resnet"])).state_dict()
    assert all(torch.equal(value, state[key.removeprefix("backbone.")]) for key, value in loaded.items())
    headless = tmp_path / "headless.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, headless)
    assert MultiScaleBackbone("test_resnet", str(headless)).state_dict().keys() == loaded.keys()


def test_only_the_layers_the_backbone_keeps_must_be_in_the_file(weights, tmp_path):
    state = torch.load(weights["test_resnet"], weights_only=True)
    partial = tmp_path / "no_layer4.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, partial)
    MultiScaleBackbone("test_resnet", str(partial), strides=(4, 8, 16))  # layer4 is not part of it
    layer4 = loaded_keys([k for k in state if k.startswith("layer4.")])
    with pytest.raises(ConfigError) as error:
        MultiScaleBackbone("test_resnet", str(partial), strides=(4, 8, 16, 32))
    assert str(error.value) == (
        f"weights {partial} do not fit the timm architecture 'test_resnet': {len(layer4)} missing keys (first: "
        f"{first(layer4)}). {FIT}"
    )


def test_shape_mismatches_and_unreadable_files_are_config_errors(weights, tmp_path):
    state = torch.load(weights["test_resnet"], weights_only=True)
    shape = tuple(state["conv1.0.weight"].shape)
    wider = tmp_path / "wider.pth"
    torch.save({**state, "conv1.0.weight": torch.zeros(shape[0] + 1, *shape[1:])}, wider)
    with pytest.raises(ConfigError) as error:
        MultiScaleBackbone("test_resnet", str(wider))
    assert str(error.value) == (
        f"weights {wider} do not fit the timm architecture 'test_resnet': 1 shape mismatches (first: conv1.0.weight: "
        f"file {(shape[0] + 1, *shape[1:])} vs model {shape}). {FIT}"
    )
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=rf"^cannot read {re.escape(str(junk))} as a checkpoint"):
        MultiScaleBackbone("test_resnet", str(junk))


def test_missing_weights_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "resnet18.pth"
    message = (
        f"backbone weights file not found: {path}. Set backbone_weights to a local weight file of the timm model "
        "'test_resnet', or to null for a random initialisation."
    )
    with pytest.raises(ConfigError) as error:
        MultiScaleBackbone("test_resnet", str(path))
    assert str(error.value) == message
    with pytest.raises(ConfigError, match=re.escape(message)):
        PooledFrameEncoder("test_resnet", out_channels=4, weights=str(path))


def test_frozen_vggish_without_weights_warns(weights):
    with pytest.warns(UserWarning) as record:
        VGGish(width=0.0625, freeze=True, with_embedding=False)
    assert [str(w.message) for w in record if w.category is UserWarning] == [
        "VGGish is frozen (freeze=True) but has random weights: its features stay random. Pass "
        "weights=<local state dict of the PyTorch port> (a model's audio_weights; `avtoolkit pretrain vggish` "
        "writes one) for pretrained features, or set freeze=False (freeze_audio) to train it."
    ]
    saved = weights["test_resnet"].parent / "vggish.pth"
    torch.save(VGGish(width=0.0625, with_embedding=False).state_dict(), saved)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        VGGish(width=0.0625, with_embedding=False)  # trained: random weights are its start
        VGGish(str(saved), width=0.0625, freeze=True, with_embedding=False)


def test_vggish_weights_that_do_not_fit_are_config_errors(weights):
    path = weights["test_resnet"]
    with pytest.raises(ConfigError, match=rf"^weights {re.escape(str(path))} do not fit the VGGish \(PyTorch port"):
        VGGish(str(path), width=0.0625)
