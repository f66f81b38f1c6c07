import csv
import dataclasses
import re
from pathlib import Path

import pytest
from fixtures.break_trees import copy_tree, truncate_wav
from fixtures.make_music import CLASSES, make_music

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.music import Clip, class_names, frame_index, frame_indices, frame_path, read_split

SECONDS = 2.0  # 16 frames at 8 fps


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    make_music(root, seconds=SECONDS)
    return root


def test_read_split_indexes_every_clip(tree):
    clips = read_split(tree, "train")
    assert len(clips) == 6
    clip = clips[0]
    assert clip.audio == tree / "audio" / "accordion" / f"{clip.id}.wav"
    assert clip.frames == tree / "frames" / "accordion" / f"{clip.id}.mp4"
    assert (clip.label, clip.label_index, clip.n_frames) == ("accordion", 0, 16)
    assert (clip.sample_rate, clip.n_samples, clip.fps) == (11025, 22050, 8.0)
    assert clip.duration == pytest.approx(SECONDS)
    assert frame_path(clip, 1) == clip.frames / "000001.jpg" and frame_path(clip, 16).is_file()


def test_class_indices_agree_across_splits(tree):
    assert class_names(tree) == tuple(sorted(CLASSES))
    for split in ("train", "val", "test"):
        assert all(clip.label_index == CLASSES.index(clip.label) for clip in read_split(tree, split))


def test_class_names_cover_labels_of_every_split(tmp_path):
    make_music(tmp_path, seconds=SECONDS)
    with open(tmp_path / "train.csv", newline="") as f:
        first = list(csv.reader(f))[1]
    with open(tmp_path / "test.csv", "a", newline="") as f:
        csv.writer(f).writerow([*first[:3], "zither"])
    assert class_names(tmp_path) == (*sorted(CLASSES), "zither")
    assert read_split(tmp_path, "test")[-1].label_index == 3
    assert read_split(tmp_path, "train")[0].label_index == 0


def test_frame_index_follows_the_frame_times():
    clip = Clip("x", Path("x.wav"), Path("x.mp4"), 16, label="a", label_index=0, n_samples=0, sample_rate=1, fps=8.0)
    assert frame_index(clip, 0.0) == 1
    assert frame_index(clip, 0.124) == 1
    assert frame_index(clip, 0.125) == 2  # frame k shows (k - 1) / fps
    assert frame_index(clip, 1.0) == 9
    assert frame_index(clip, -3.0) == 1 and frame_index(clip, 99.0) == 16
    assert frame_indices(clip, 1.0, count=3) == [8, 9, 10]
    assert frame_indices(clip, 1.0, count=3, stride=4) == [5, 9, 13]
    assert frame_indices(clip, 0.0, count=3) == [1, 1, 2]
    assert frame_indices(clip, 99.0, count=2) == [16, 16]
    assert frame_indices(dataclasses.replace(clip, fps=1.0), 2.5) == [3]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_frame", "not found"),
        ("missing_frames_folder", "frames folder .* not found"),
        ("wrong_rate", "22050 Hz but 11025 Hz was expected"),
        ("corrupt_wav", "cannot read audio file"),
    ],
)
def test_broken_files_fail_naming_the_file(tmp_path, case, message):
    broken = make_music(tmp_path, seconds=SECONDS, broken=[case])
    with pytest.raises(DatasetError, match=message) as error:
        read_split(tmp_path, "train")
    assert broken[case] in str(error.value)
    assert len(read_split(tmp_path, "test")) == 3  # other splits are fine


def test_empty_split_names_split_and_file(tmp_path):
    make_music(tmp_path, seconds=SECONDS, broken=["empty_split"])
    with pytest.raises(DatasetError, match=re.escape(f"split 'val' is empty: {tmp_path / 'val.csv'}")):
        read_split(tmp_path, "val")


def test_missing_column_names_file_and_column(tmp_path):
    make_music(tmp_path, seconds=SECONDS, broken=["missing_column"])
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'train.csv'} has no column 'n_frames'")):
        read_split(tmp_path, "train")


def test_missing_csvs_and_bad_fields(tmp_path):
    with pytest.raises(DatasetError, match=r"no split CSV"):
        class_names(tmp_path)
    make_music(tmp_path, seconds=SECONDS)
    train = tmp_path / "train.csv"
    train.write_text(train.read_text().replace(",16,", ",many,", 1))
    with pytest.raises(DatasetError, match=r"train.csv line 2: n_frames must be a positive integer, got 'many'"):
        read_split(tmp_path, "train")


def test_frames_at_another_rate_are_caught(tmp_path):
    make_music(tmp_path, seconds=6.5, fps=1.0)  # 7 frames for 6.5 s of audio
    with pytest.raises(DatasetError, match=r"7 frames cover 0.9 s at 8 fps .* lasts 6.5 s"):
        read_split(tmp_path, "train")
    assert len(read_split(tmp_path, "train", fps=1.0)) == 6


def test_sample_rate_is_configurable(tmp_path):
    make_music(tmp_path, seconds=SECONDS, sample_rate=16000)
    assert read_split(tmp_path, "val", sample_rate=16000)[0].n_samples == 32000


def test_truncated_audio_is_reported_as_shorter_than_its_frames(music_tree, tmp_path):
    root = copy_tree(music_tree, tmp_path / "music")
    with open(root / "train.csv", newline="") as f:
        audio = next(csv.DictReader(f))["audio"]
    truncate_wav(root / audio, 2.5)  # its 52 frames cover 6.5 s
    with pytest.raises(DatasetError) as error:
        read_split(root, "train")
    assert str(error.value) == (
        f"{root / 'train.csv'} line 2: {root / audio} is 2.5 s long but its 52 frames cover 6.5 s at 8 fps: the audio "
        "is shorter than its frames (a truncated file?). Re-extract the audio (re-run the preparation of this clip) "
        "or drop the clip. (If every clip is reported so, the frames were extracted at a higher rate than 8 fps: set "
        "fps to it.)"
    )
