"""Encoder pre-training: VGGish learns the categories of the training clips, a backbone the objects of fresh
pictures; both save weights the models load."""

import unicodedata
from dataclasses import replace

import numpy as np
import pytest
import torch
from fixtures.tiny_models import TINY_FAVS

from avtoolkit import pretraining
from avtoolkit.cli import main
from avtoolkit.data.datamodules import SegmentationDataModule
from avtoolkit.data.synth import held_out_clips, scenes
from avtoolkit.data.synth.assets import find_assets
from avtoolkit.data.synth.pictures import PICTURES, STYLES, generic_emoji, pictures_of
from avtoolkit.data.synth.scenes import FRAME_SIZE, still_scene
from avtoolkit.models.encoders.multiscale import MultiScaleBackbone
from avtoolkit.models.encoders.vggish import VGGish
from avtoolkit.models.segmentation.favs import FAVS, AudioFeatureMap
from avtoolkit.models.segmentation.tpavi import TPAVINet
from avtoolkit.pretraining import (
    MAX_OBJECTS,
    PICTURE_NAMES,
    pretrain_backbone,
    pretrain_vggish,
    render_stills,
    still_classes,
)


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


def test_vggish_on_a_held_out_family_tree_is_also_scored_on_the_held_out_test_clips(protocol_trees, tmp_path):
    root = protocol_trees["s4"]
    held_out = held_out_clips(root)
    assert held_out and held_out == set(SegmentationDataModule("s4", root).build_dataset("test_held_out").names)
    result = pretrain_vggish(
        root, tmp_path / "v.pt", width=0.0625, steps=2, batch_size=4, num_workers=0, progress=False
    )
    assert result.held_out_accuracy is not None and 0.0 <= result.held_out_accuracy <= 1.0
    assert result.held_out_accuracy in {k / len(held_out) for k in range(len(held_out) + 1)}  # over those clips


def test_pretraining_needs_steps(synthetic_trees, tmp_path):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        pretrain_vggish(synthetic_trees["s4"], tmp_path / "w.pt", steps=0)
    assert not (tmp_path / "w.pt").exists()


def test_a_still_shows_each_of_its_pictures():
    assets = find_assets()
    pictures = [pictures_of(name, assets.picture_families)[0] for name in ("violin", "drum", "bird")]
    frame, owner = still_scene(pictures, np.random.default_rng(0), assets)
    assert frame.shape == (FRAME_SIZE, FRAME_SIZE, 3) and frame.dtype == np.uint8
    assert set(np.unique(owner).tolist()) == {-1, 0, 1, 2}  # the backdrop and each object (overlaps are small)
    assert all((owner == k).sum() > 200 for k in range(3))


def test_a_still_redraws_the_share_of_its_pictures_it_is_asked_to(monkeypatch):
    assets = find_assets()
    styles: list[str] = []
    redraw = scenes.redraw

    def recorded(image, style, rng):
        styles.append(style)
        return redraw(image, style, rng)

    monkeypatch.setattr(scenes, "redraw", recorded)
    violin = pictures_of("violin", ("noto",))
    for seed in range(60):
        still_scene(violin, np.random.default_rng(seed), assets, restyle=0.0)
    assert styles == []
    for seed in range(60):
        still_scene(violin, np.random.default_rng(seed), assets, restyle=0.5)
    assert 15 <= len(styles) <= 45 and set(styles) == set(STYLES)


def test_generic_emoji_are_other_things_every_emoji_family_draws():
    assets = find_assets()
    generic = generic_emoji(assets)
    assert len(generic) > 500 and len(set(generic)) == len(generic)
    used = {p.ref for depictions in PICTURES.values() for p in depictions}
    assert not used & set(generic), "no dataset object is a generic class"
    assert not any("SIGN" in unicodedata.name(e) or "FLAG" in unicodedata.name(e) for e in generic)
    classes = still_classes(assets, ("noto", "twemoji", "drawn"), generic=True)
    assert len(classes) == len(PICTURE_NAMES) + len(generic)
    assert all({p.family for p in depictions} == {"noto", "twemoji"} for depictions in classes[len(PICTURE_NAMES) :])
    assert not any(still_classes(assets, ("drawn",), True)[len(PICTURE_NAMES) :]), "no emoji family, no generic one"
    assert len(still_classes(assets, ("noto",), generic=False)) == len(PICTURE_NAMES)


def test_stills_are_labelled_with_the_objects_they_show_and_seeded_per_picture():
    assets = find_assets()
    images, labels = render_stills(6, 32, seed=3, assets=assets, workers=1, progress=False)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (6, len(PICTURE_NAMES)) and set(labels.unique().tolist()) <= {0.0, 1.0}
    assert ((labels.sum(1) >= 1) & (labels.sum(1) <= MAX_OBJECTS)).all()
    again = render_stills(6, 32, seed=3, assets=assets, workers=2, progress=False)
    assert torch.equal(images, again[0]) and torch.equal(labels, again[1]), "the worker count changes nothing"
    assert not torch.equal(images, render_stills(6, 32, seed=4, assets=assets, workers=1, progress=False)[0])


def test_the_share_of_generic_objects_is_the_one_asked_for():
    assets = find_assets()
    _, labels = render_stills(40, 16, seed=0, assets=assets, generic=0.5, workers=1, progress=False)
    assert labels.shape[1] == len(PICTURE_NAMES) + len(generic_emoji(assets))
    assert 0.3 < labels[:, len(PICTURE_NAMES) :].sum() / labels.sum() < 0.7
    _, labels = render_stills(40, 16, seed=0, assets=assets, generic=0.1, workers=1, progress=False)
    assert 0.0 < labels[:, len(PICTURE_NAMES) :].sum() / labels.sum() < 0.25
    _, labels = render_stills(20, 16, 0, assets, objects=1, workers=1, progress=False)
    assert labels.shape[1] == len(PICTURE_NAMES) and (labels.sum(1) == 1).all()


def test_pretrained_backbone_loads_into_the_segmentation_models(tmp_path):
    out = tmp_path / "weights" / "backbone.pt"
    result = pretrain_backbone(out, "test_resnet", 32, images=8, steps=2, batch_size=4, workers=1, progress=False)
    assert result.path == out and result.steps == 2
    assert result.n_categories == len(PICTURE_NAMES)
    assert 0.0 <= result.val_accuracy <= 1.0
    assert not list(out.parent.glob(".*.tmp")), "the atomic write leaves no temporary file"
    state = torch.load(out, weights_only=True)
    assert not any(key.startswith("fc.") for key in state), "the classifier head is not saved"
    torch.manual_seed(0)
    random_init = MultiScaleBackbone("test_resnet", None, (4, 8, 16, 32)).state_dict()
    loaded = MultiScaleBackbone("test_resnet", str(out), (4, 8, 16, 32)).state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, state[key.removeprefix("backbone.")])
    assert any(not torch.equal(value, random_init[key]) for key, value in loaded.items() if key.endswith("weight"))
    with pytest.raises(ValueError, match=f"{out}.*do not fit the timm architecture 'resnet18'"):
        MultiScaleBackbone("resnet18", str(out), (4, 8, 16, 32))
    FAVS(num_classes=1, **{**TINY_FAVS, "backbone_weights": str(out)})


def test_pretrain_backbone_command(tmp_path, capsys):
    out = tmp_path / "backbone.pt"
    args = ["--backbone", "test_resnet", "--image_size", "32", "--images", "4", "--steps", "1", "--workers", "1"]
    main(["pretrain", "backbone", str(out), *args])
    assert out.is_file() and f"written to {out}" in capsys.readouterr().out


def test_a_still_takes_the_other_kind_of_object_when_one_is_used_up(monkeypatch):
    # Two generic emoji and stills of up to four objects, all asked to be generic: the rest are the datasets'.
    monkeypatch.setattr(pretraining, "generic_emoji", lambda assets: ("\U0001f436", "\U0001f431"))
    pretraining.still_classes.cache_clear()
    try:
        job = pretraining._StillJob(0, 0, 16, find_assets(), ("noto",), 4, 1.0, 0.0)
        shown = [pretraining._render_still(replace(job, index=i))[1] for i in range(12)]
    finally:
        pretraining.still_classes.cache_clear()
    assert all(s.shape == (len(PICTURE_NAMES) + 2,) for s in shown)
    assert any(s[len(PICTURE_NAMES) :].all() and s[: len(PICTURE_NAMES)].any() for s in shown)


def test_stills_of_some_families_draw_only_from_them_and_show_only_what_they_depict(monkeypatch):
    assets = find_assets()
    drawn: list[str] = []
    still = pretraining.still_scene

    def recorded(pictures, *args):
        drawn.extend(p.family for p in pictures)
        return still(pictures, *args)

    monkeypatch.setattr(pretraining, "still_scene", recorded)
    _, labels = render_stills(12, 32, seed=0, assets=assets, workers=1, progress=False, families=("openclipart",))
    assert set(drawn) == {"openclipart"}
    depicted = [bool(pictures_of(name, ("openclipart",))) for name in PICTURE_NAMES]
    assert not labels[:, : len(PICTURE_NAMES)][:, [not d for d in depicted]].any()  # none openclipart lacks
    assert not labels[:, len(PICTURE_NAMES) :].any(), "openclipart draws no generic emoji"
    assert labels[:, : len(PICTURE_NAMES)][:, depicted].sum() > 12 / 2


def test_backbone_with_a_held_out_family_never_trains_on_it_and_is_scored_on_it(tmp_path, monkeypatch):
    calls: list[tuple[str, ...] | None] = []
    render = pretraining.render_stills

    def recorded(*args, **kwargs):
        calls.append((args[4], args[6], args[7]))  # families, generic share, restyle share
        return render(*args, **kwargs)

    monkeypatch.setattr(pretraining, "render_stills", recorded)
    out = tmp_path / "backbone.pt"
    result = pretrain_backbone(
        out,
        "test_resnet",
        32,
        images=8,
        steps=1,
        batch_size=4,
        workers=1,
        progress=False,
        held_out_pictures="openclipart",
        generic_pictures=0.25,
        restyle=0.5,
    )
    assert result.n_categories == len(PICTURE_NAMES) + len(generic_emoji(find_assets()))
    (training, *training_shares), (validation, *validation_shares), (held_out, *held_out_shares) = calls
    assert training == validation and "openclipart" not in training and len(training) >= 2
    assert training_shares == [0.25, 0.5] and validation_shares == held_out_shares == [0.0, 0.0]  # scored as drawn
    assert held_out == ("openclipart",) and result.held_out_accuracy is not None
    assert 0.0 <= result.held_out_accuracy <= 1.0
    with pytest.raises(ValueError, match="held_out_pictures 'clipart' is not a picture family in use"):
        pretrain_backbone(out, "test_resnet", 32, images=8, steps=1, held_out_pictures="clipart")


def test_backbone_pretraining_needs_pictures_and_steps(tmp_path):
    with pytest.raises(ValueError, match="images and steps must be >= 1"):
        pretrain_backbone(tmp_path / "w.pt", "test_resnet", images=0)
    with pytest.raises(ValueError, match=r"restyle is a share of the training objects, in \[0, 1\]; got 1.5"):
        pretrain_backbone(tmp_path / "w.pt", "test_resnet", restyle=1.5)
    assert not (tmp_path / "w.pt").exists()


def test_an_unknown_backbone_is_one_error_naming_the_closest_timm_models(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "backbone", str(tmp_path / "w.pt"), "--backbone", "resnet81", "--images", "4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: backbone 'resnet81' is not a timm model: did you mean resnet18")
    assert len(err.splitlines()) == 1 and not (tmp_path / "w.pt").exists()
