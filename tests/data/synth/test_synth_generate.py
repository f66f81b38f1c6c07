"""Generate each tiny synthetic dataset once and check it against the official layouts (specs/data.md)."""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.synth import AVSS_CLASSES, AVSS_PALETTE, SEGMENTATION_CATEGORIES, generate
from avtoolkit.data.synth import layouts as synth_layouts

SPLITS = ("train", "val", "test")
AVSS_INDEX = {c.name: AVSS_CLASSES.index(c.avss) for c in SEGMENTATION_CATEGORIES}


@pytest.fixture
def tiny(synthetic_trees) -> dict[str, Path]:
    """Every layout, tiny, generated once per test session (tests/conftest.py)."""
    return synthetic_trees


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _audio(path: Path, rate: int, seconds: float) -> np.ndarray:
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (rate, 1, "PCM_16", "WAV")
    audio, _ = sf.read(path, dtype="float32")
    assert len(audio) == round(rate * seconds)
    assert 20 * np.log10(np.sqrt(np.mean(audio**2))) > -30.0, f"{path} is (nearly) silent"
    assert np.abs(audio).max() < 1.0
    return audio


def _frame(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.size == (224, 224) and image.mode == "RGB"
    return np.asarray(image)


def _binary_mask(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.size == (224, 224) and image.mode == "L"
    mask = np.asarray(image)
    assert set(np.unique(mask)) <= {0, 255}
    return mask > 0


def _inside(mask: np.ndarray, boxes: list[list[int]]) -> bool:
    """Whether every pixel of ``mask`` lies in one of ``boxes`` (left, top, right, bottom)."""
    allowed = np.zeros_like(mask)
    for left, top, right, bottom in boxes:
        allowed[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
    return not (mask & ~allowed).any()


def _check_sounding_mask(mask: np.ndarray, objects: list[dict], frame: int) -> None:
    """The mask covers each sounding object's sprite (a good part of its box) and nothing outside them."""
    sounding = [o["boxes"][frame] for o in objects if o["sounding"]]
    assert mask.any()
    assert _inside(mask, sounding), "mask pixels outside every sounding object"
    for left, top, right, bottom in sounding:
        covered = mask[max(top, 0) : bottom, max(left, 0) : right].mean()
        assert covered > 0.05, "a sounding object is missing from the mask"


# Layout, counts and media.


def test_music_layout(tiny):
    root = tiny["music"]
    ids: dict[str, set[str]] = {}
    for split, per_class in zip(SPLITS, (2, 1, 1), strict=True):
        header, rows = _rows(root / f"{split}.csv")
        assert header == ["audio", "frames", "n_frames", "label"]
        assert len(rows) == 4 * per_class and len({r["label"] for r in rows}) == 4
        ids[split] = set()
        for row in rows:
            clip = Path(row["audio"]).stem
            assert row["audio"] == f"audio/{row['label']}/{clip}.wav"
            assert row["frames"] == f"frames/{row['label']}/{clip}.mp4"
            _audio(root / row["audio"], 11025, 7.0)
            frames = sorted((root / row["frames"]).iterdir())
            assert [f.name for f in frames] == [f"{k:06d}.jpg" for k in range(1, int(row["n_frames"]) + 1)]
            assert int(row["n_frames"]) == 56  # 7 s at 8 fps
            first, last = _frame(frames[0]), _frame(frames[-1])
            assert np.abs(first.astype(int) - last).mean() > 1.0, "the picture does not move"
            ids[split].add(clip)
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])


def test_s4_layout_and_masks(tiny):
    root = tiny["s4"]
    header, rows = _rows(root / "s4_meta_data.csv")
    assert header == ["name", "start", "category", "split"]
    assert [sum(r["split"] == s for r in rows) for s in SPLITS] == [6, 3, 3]
    clips = {c["name"]: c for c in _manifest(root)["clips"]}
    for row in rows:
        name, category, split = row["name"], row["category"], row["split"]
        objects = clips[name]["objects"]
        assert [o["category"] for o in objects if o["sounding"]] == [category]
        _audio(root / f"s4_data/audio_wav/{split}/{category}/{name}.wav", 16000, 5.0)
        frames = root / f"s4_data/visual_frames/{split}/{category}/{name}"
        assert sorted(p.name for p in frames.iterdir()) == [f"{name}_{k}.png" for k in range(1, 6)]
        for k in range(1, 6):
            _frame(frames / f"{name}_{k}.png")
        masks = root / f"s4_data/gt_masks/{split}/{category}/{name}"
        labelled = [1] if split == "train" else [1, 2, 3, 4, 5]
        assert sorted(p.name for p in masks.iterdir()) == sorted(f"{name}_{k}.png" for k in labelled)
        for k in labelled:
            _check_sounding_mask(_binary_mask(masks / f"{name}_{k}.png"), objects, k - 1)
    assert sum(any(not o["sounding"] for o in c["objects"]) for c in clips.values()) >= 0.75 * len(clips)


def test_ms3_layout_and_masks(tiny):
    root = tiny["ms3"]
    header, rows = _rows(root / "ms3_meta_data.csv")
    assert header == ["name", "split"]
    assert [sum(r["split"] == s for r in rows) for s in SPLITS] == [4, 2, 2]
    clips = {c["name"]: c for c in _manifest(root)["clips"]}
    for row in rows:
        vid, split = row["name"], row["split"]
        objects = clips[vid]["objects"]
        assert 2 <= sum(o["sounding"] for o in objects) <= 3
        _audio(root / f"ms3_data/audio_wav/{split}/{vid}.wav", 16000, 5.0)
        assert sorted(p.name for p in (root / f"ms3_data/visual_frames/{vid}").iterdir()) == [
            f"{vid}.mp4_{k}.png" for k in range(1, 6)
        ]
        for k in range(1, 6):
            _frame(root / f"ms3_data/visual_frames/{vid}/{vid}.mp4_{k}.png")
            mask = _binary_mask(root / f"ms3_data/gt_masks/{split}/{vid}/{vid}_{k}.png")
            _check_sounding_mask(mask, objects, k - 1)


def test_avss_layout_and_labels(tiny):
    root = tiny["avss"]
    label2idx = json.loads((root / "label2idx.json").read_text())
    assert list(label2idx) == list(AVSS_CLASSES) and label2idx["background"] == 1 and len(label2idx) == 71
    assert sorted(label2idx.values()) == list(range(1, 72))
    header, rows = _rows(root / "metadata.csv")
    assert {"uid", "label", "split", "a_obj"} <= set(header)
    assert {(r["label"], r["split"]) for r in rows} == {(s, p) for s in ("v1s", "v1m", "v2") for p in SPLITS}
    palette = set(_packed(AVSS_PALETTE))
    clips = {c["name"]: c for c in _manifest(root)["clips"]}
    for row in rows:
        where, subset, objects = root / row["label"] / row["uid"], row["label"], clips[row["uid"]]["objects"]
        n_frames = 10 if subset == "v2" else 5
        _audio(where / "audio.wav", 16000, float(n_frames))
        assert sorted(p.name for p in (where / "frames").iterdir()) == sorted(f"{i}.jpg" for i in range(n_frames))
        labelled = [0] if (subset, row["split"]) == ("v1s", "train") else list(range(n_frames))
        for folder in ("labels_rgb", "labels_semantic"):
            assert sorted(p.name for p in (where / folder).iterdir()) == sorted(f"{i}.png" for i in labelled)
        sounding = {AVSS_INDEX[o["category"]] for o in objects if o["sounding"]}
        assert set(row["a_obj"].split("_")) == {AVSS_CLASSES[i] for i in sounding}
        seen = set()
        for i in labelled:
            _frame(where / "frames" / f"{i}.jpg")
            rgb = Image.open(where / "labels_rgb" / f"{i}.png")
            semantic = Image.open(where / "labels_semantic" / f"{i}.png")
            assert rgb.mode == "RGB" and semantic.mode == "L" and rgb.size == semantic.size == (224, 224)
            rgb_pixels, index = np.asarray(rgb), np.asarray(semantic)
            assert set(np.unique(_packed(rgb_pixels))) <= palette, "colour outside the 71-class palette"
            assert (AVSS_PALETTE[index] == rgb_pixels).all(), "labels_rgb and labels_semantic disagree"
            present = set(np.unique(index)) - {0}
            assert present <= sounding, "a silent object is labelled"
            _check_sounding_mask(index > 0, objects, i)
            seen |= present
        assert seen == sounding


def _packed(rgb: np.ndarray) -> np.ndarray:
    """Colours as single integers 0xRRGGBB."""
    rgb = rgb.reshape(-1, 3).astype(np.int64)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


# Manifest, determinism, re-runs, errors.


@pytest.mark.parametrize("layout", synth_layouts.LAYOUTS)
def test_manifest_lists_every_file_with_its_checksum(tiny, layout):
    root = tiny[layout]
    manifest = _manifest(root)
    assert manifest["parameters"]["layout"] == layout and manifest["parameters"]["size"] == "tiny"
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest
    assert not list(root.parent.glob(f".{layout}.*")), "temporary folder left behind"


def test_same_seed_same_files_whatever_the_workers(tiny, tmp_path):
    again = generate("s4", tmp_path / "s4", size="tiny", workers=2, progress=False)
    assert (again / "manifest.json").read_bytes() == (tiny["s4"] / "manifest.json").read_bytes()


def test_rerun_with_the_same_parameters_is_a_no_op(tiny):
    root = tiny["avss"]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate("avss", root, size="tiny", workers=1, progress=False) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_rerun_with_other_parameters_raises(tiny):
    root = tiny["ms3"]
    with pytest.raises(DatasetError, match=r"seed: 0 there, 1 now") as error:
        generate("ms3", root, size="tiny", seed=1, progress=False)
    assert str(root) in str(error.value) and "remove the folder" in str(error.value)
    with pytest.raises(DatasetError, match=r"layout: 'ms3' there, 's4' now"):
        generate("s4", root, size="tiny", progress=False)


def test_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="does not hold a synthetic dataset"):
        generate("s4", tmp_path / "data", size="tiny", progress=False)
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("option", "package"),
    [
        ("soundfont", "fluidr3mono-gm-soundfont"),
        ("emoji_font", "fonts-noto-color-emoji"),
        ("clipart_dir", "openclipart-svg"),
    ],
)
def test_missing_asset_names_the_package(tmp_path, option, package):
    with pytest.raises(DatasetError, match=package) as error:
        generate("s4", tmp_path / "s4", size="tiny", progress=False, **{option: tmp_path / "nowhere"})
    assert f"--{option}" in str(error.value)
    assert not (tmp_path / "s4").exists()


def test_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    write_s4 = synth_layouts._WRITERS["s4"]

    def failing(clip, *args):
        calls.append(clip.name)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return write_s4(clip, *args)

    monkeypatch.setitem(synth_layouts._WRITERS, "s4", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate("s4", tmp_path / "s4", size="tiny", workers=1, progress=False)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []


def test_the_readers_read_every_generated_layout(tiny):
    """The generator and the readers agree on the official layouts (the point of writing them)."""
    from avtoolkit.data import batch
    from avtoolkit.data.avsbench import AVSSDataset, MS3Dataset, S4Dataset
    from avtoolkit.data.check import check_tree
    from avtoolkit.data.mixing import MixAndSeparate
    from avtoolkit.data.music import read_split

    for name, dataset in (("s4", S4Dataset), ("ms3", MS3Dataset), ("avss", AVSSDataset)):
        for split in ("train", "val", "test"):
            data = dataset(tiny[name], split, image_size=64)
            sample = data[len(data) - 1]
            assert sample[batch.MASKS][sample[batch.MASK_VALID]].any(), (name, split)  # sounding objects marked
        report = check_tree(tiny[name], name)
        assert report.ok, report.format()
    mixtures = MixAndSeparate(read_split(tiny["music"], "test"), window=32767, image_size=64, train=False)
    assert mixtures[0][batch.SOURCES].abs().amax(-1).min() > 0.01  # both sources audible
    assert check_tree(tiny["music"], "music").ok
