"""Unit tests of the synthetic data generator's parts: tables, pictures, compositing, palette, plans."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.synth import (
    AVSS_CLASSES,
    AVSS_PALETTE,
    LAYOUTS,
    MUSIC_CATEGORIES,
    SEGMENTATION_CATEGORIES,
    plan,
)
from avtoolkit.data.synth.assets import check_emoji, find_assets
from avtoolkit.data.synth.pictures import PICTURES, Pose, composite, pictures_of, posed, posed_size, sprite
from avtoolkit.data.synth.sounds import VOICES

YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]$")


@pytest.fixture(scope="module")
def assets():
    return find_assets()


def test_avss_classes_are_the_71_official_names():
    assert len(AVSS_CLASSES) == 71 == len(set(AVSS_CLASSES))
    assert AVSS_CLASSES[0] == "background"
    assert {"emergency-car", "frying-food", "vacuum-cleaner", "missile-rocket"} <= set(AVSS_CLASSES)


def test_voc_palette():
    assert tuple(AVSS_PALETTE[1]) == (128, 0, 0) and tuple(AVSS_PALETTE[15]) == (192, 128, 128)  # VOC "person"
    assert AVSS_PALETTE.shape == (71, 3)
    assert len({tuple(c) for c in AVSS_PALETTE}) == 71


@pytest.mark.parametrize("categories", [MUSIC_CATEGORIES, SEGMENTATION_CATEGORIES], ids=["music", "segmentation"])
def test_categories_have_their_own_voice_and_picture(categories):
    assert len({c.name for c in categories}) == len(categories)
    assert len({c.picture for c in categories}) == len(categories), "two categories share a picture name"
    depictions = [p for c in categories for p in PICTURES[c.picture]]
    assert len(set(depictions)) == len(depictions), "two categories share a depiction"
    assert len({c.voice for c in categories}) == len(categories), "two categories share a sound"
    assert all(c.voice in VOICES and c.picture in PICTURES for c in categories)


def test_segmentation_categories_map_to_distinct_avss_classes():
    names = [c.avss for c in SEGMENTATION_CATEGORIES]
    assert set(names) <= set(AVSS_CLASSES) and len(set(names)) == len(names)
    assert 12 <= len(SEGMENTATION_CATEGORIES) <= 16


def test_music_categories_are_the_general_midi_music_classes():
    assert [c.name for c in MUSIC_CATEGORIES] == [
        "accordion", "acoustic_guitar", "cello", "clarinet", "erhu", "flute", "saxophone", "trumpet", "tuba",
        "violin", "xylophone",
    ]  # fmt: skip


@pytest.mark.parametrize("picture", [p for name in sorted(PICTURES) for p in PICTURES[name]], ids=lambda p: p.id)
def test_every_picture_renders(picture, assets):
    image = sprite(picture, assets)
    assert image.mode == "RGBa"
    alpha = np.asarray(image)[..., 3]
    assert alpha.max() == 255, "not opaque anywhere"
    # Cropped to the alpha: every border touches the picture.
    assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()
    assert 0.05 < (alpha > 127).mean() < 1.0  # (a diagonal flute fills a tenth of its box)
    assert min(image.size) >= 8 and max(image.size) >= 100  # (flutes and oboes are thin)


def test_posed_size_matches_the_drawing(assets):
    image = sprite(PICTURES["trumpet"][0], assets)
    for longest, angle in [(80.0, 0.0), (120.0, 12.0), (100.0, -15.0)]:
        drawn = posed(image, longest, angle)
        width, height = posed_size(image.size, Pose(0.0, 0.0, longest, angle))
        assert abs(drawn.width - width) <= 1 and abs(drawn.height - height) <= 1
        if angle == 0.0:
            assert max(drawn.size) == round(longest)


def _square(size: int, alpha: int, color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGBA", (size, size), (*color, alpha)).convert("RGBa")


def test_composite_owner_follows_visible_alpha():
    background = np.zeros((20, 20, 3), dtype=np.uint8)
    back, front = _square(10, 255, (255, 0, 0)), _square(10, 255, (0, 255, 0))
    frame, owner = composite(background, [(back, (2, 2)), (front, (6, 6))])
    assert (owner[2:6, 2:6] == 0).all() and (owner[6:16, 6:16] == 1).all() and owner[0, 0] == -1
    assert tuple(frame[7, 7]) == (0, 255, 0) and tuple(frame[3, 3]) == (255, 0, 0)
    # A mostly transparent sprite in front does not take the pixel from the one behind ...
    glass = _square(10, 100, (0, 0, 255))
    _, owner = composite(background, [(back, (2, 2)), (glass, (2, 2))])
    assert (owner[2:12, 2:12] == 0).all()
    # ... and a sprite covering half a pixel or less owns nothing.
    _, owner = composite(background, [(glass, (2, 2))])
    assert (owner == -1).all()


def test_composite_cuts_sprites_at_the_border():
    background = np.full((10, 10, 3), 50, dtype=np.uint8)
    frame, owner = composite(background, [(_square(6, 255, (255, 255, 255)), (-3, 7))])
    assert (owner == 0).sum() == 3 * 3 and owner[9, 0] == 0
    assert frame.shape == (10, 10, 3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_plan_is_deterministic_with_unique_names(layout):
    clips = plan(layout, "small", seed=3)
    assert clips == plan(layout, "small", seed=3)
    assert clips != plan(layout, "small", seed=4)
    names = [c.name for c in clips]
    assert len(set(names)) == len(names)
    videos = [name if layout in ("music", "ms3") else name.rsplit("_", 1)[0] for name in names]
    assert all(YOUTUBE_ID.match(video) for video in videos)
    for split in ("train", "val", "test"):
        indices = [c.index for c in clips if c.split == split]
        assert sorted(indices) == list(range(len(indices)))


def test_plan_music_counts():
    clips = plan("music", "small", seed=0)
    counts = {split: sum(c.split == split for c in clips) for split in ("train", "val", "test")}
    assert counts == {"train": 220, "val": 44, "test": 44}


def test_plan_single_source_clips_mostly_show_distractors():
    for clips in (plan("s4", "small", 0), [c for c in plan("avss", "small", 0) if c.subset == "v1s"]):
        assert all(len(c.sounding) == 1 for c in clips)
        assert np.mean([len(c.silent) > 0 for c in clips]) >= 0.85
        assert all(len(c.sounding) + len(c.silent) <= 3 for c in clips)
        assert all(not set(c.sounding) & set(c.silent) for c in clips)
    leads = [c.sounding[0].name for c in plan("s4", "small", 0) if c.split == "train"]
    assert set(leads) == {c.name for c in SEGMENTATION_CATEGORIES}  # every category is trained on


def test_plan_multi_source_clips():
    clips = plan("ms3", "small", 0)
    assert all(2 <= len(c.sounding) <= 3 for c in clips)
    assert np.mean([len(c.silent) > 0 for c in clips]) >= 0.7
    assert all(len({*c.sounding, *c.silent}) == len(c.sounding) + len(c.silent) for c in clips)


def test_check_emoji_rejects_a_font_without_colour_glyphs(assets):
    plain = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not plain.is_file():
        pytest.skip("no DejaVu font to test with")
    with pytest.raises(DatasetError, match="fonts-noto-color-emoji"):
        check_emoji(plain, ["\U0001f3bb"])
    check_emoji(assets.emoji_font, [p.ref for name in ("flute", "accordion") for p in pictures_of(name, ["noto"])])
