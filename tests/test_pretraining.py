"""Encoder pre-training: VGGish learns the categories of the training clips and saves weights the models load."""

import pytest
import torch

from avtoolkit.cli import main
from avtoolkit.models.encoders.vggish import VGGish
from avtoolkit.models.segmentation.favs import AudioFeatureMap
from avtoolkit.models.segmentation.tpavi import TPAVINet
from avtoolkit.pretraining import pretrain_vggish


def test_pretrained_vggish_loads_at_its_width_and_changes_the_network(synthetic_trees, tmp_path):
    out = tmp_path / "weights" / "vggish.pt"
    result = pretrain_vggish(synthetic_trees["s4"], out, width=0.125, steps=2, batch_size=4, num_workers=0)
    assert result.path == out and out.is_file() and result.steps == 2
    assert result.n_categories >= 2 and 0.0 <= result.val_accuracy <= 1.0
    assert not list(out.parent.glob(".*.tmp")), "the atomic write leaves no temporary file"
    state = torch.load(out, weights_only=True)
    assert all(key.startswith(("features.", "embeddings.")) for key in state), "the classifier head is not saved"
    loaded = VGGish(str(out), width=0.125)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key])
    assert not torch.equal(state["features.0.weight"], VGGish(None, 0.125).state_dict()["features.0.weight"])
    with pytest.raises(ValueError, match=f"{out}.*shape mismatches"):
        VGGish(str(out), width=0.25, with_embedding=False)
    # Both kinds of reader load it: the embedding (TPAVI) and the feature map only (FAVS).
    TPAVINet(backbone="test_resnet", audio_weights=str(out), audio_width=0.125, freeze_audio=True, dim=16)
    AudioFeatureMap(16, str(out), width=0.125, freeze=True)


def test_pretrain_command(synthetic_trees, tmp_path, capsys):
    out = tmp_path / "vggish.pt"
    main(["pretrain", "vggish", str(synthetic_trees["s4"]), str(out), "--width", "0.125", "--steps", "1"])
    assert out.is_file() and f"written to {out}" in capsys.readouterr().out


def test_pretraining_needs_steps(synthetic_trees, tmp_path):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        pretrain_vggish(synthetic_trees["s4"], tmp_path / "w.pt", steps=0)
    assert not (tmp_path / "w.pt").exists()
