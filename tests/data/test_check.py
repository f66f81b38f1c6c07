import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixtures.break_trees import copy_tree, make_empty, paint_mask, put_nonfinite, truncate_wav, write_not_a_picture
from fixtures.make_avsbench import make_avss, make_ms3, make_s4, write_binary_mask, write_frame
from fixtures.make_music import make_music
from PIL import Image

from avtoolkit.data import check
from avtoolkit.data.avsbench_layout import avsbench_clips
from avtoolkit.data.check import CheckReport, check_tree

MAKERS = {
    "s4": make_s4,
    "ms3": make_ms3,
    "avss": make_avss,
    "music": lambda root, **kw: make_music(root, seconds=2.0, **kw),
}
COUNTS = {
    "s4": {"train": 3, "val": 2, "test": 2},
    "ms3": {"train": 3, "val": 2, "test": 2},
    "avss": {"train": 4, "val": 3, "test": 3},
    "music": {"train": 6, "val": 3, "test": 3},
}
METADATA_FILES = {"s4": "s4_meta_data.csv", "ms3": "ms3_meta_data.csv", "avss": "metadata.csv"}
RESTORE = "restore it, or remove the clip's row from"
REBALANCE = "Rebalance the splits if this is not intended."


def mentions(problem, path):
    """The problem names ``path``: as its file or in its message, or as its folder with the name in the message."""
    path = str(path)
    return (
        path in problem.file
        or path in problem.message
        or (str(Path(path).parent) == problem.file and Path(path).name in problem.message)
    )


def errors_about(report, text):
    return [p for p in report.errors if mentions(p, text)]


def assert_problems(report, expected):
    """Exactly these problems, errors then warnings as the report lists them: (severity, file relative to the
    root, message or its prefix)."""
    got = [(p.severity, report.relative(p.file), report.relative(p.message)) for p in report.errors + report.warnings]
    assert len(got) == len(expected), report.format()
    for problem, (severity, file, prefix) in zip(got, expected, strict=True):
        assert problem[:2] == (severity, file) and problem[2].startswith(prefix), (problem, prefix)


def metadata(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path, row):
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(row)


@pytest.mark.parametrize("layout", MAKERS)
def test_well_formed_tree_has_no_errors(tmp_path, layout):
    MAKERS[layout](tmp_path)
    report = check_tree(tmp_path, layout)
    assert report.ok and report.counts == COUNTS[layout]
    expected = []
    if layout == "s4":  # the fixture's 7 clips leave two categories out of a split
        expected = [
            ("warning", "s4_meta_data.csv", "category 'male_speech' has no test clips (train 1, val 1): it is not "),
            ("warning", "s4_meta_data.csv", "category 'playing_violin' has no val clips (train 1, test 1): it "),
        ]
    if layout == "avss":  # the fixture labels every frame; v1s train clips are labelled on frame 0 only
        expected = [
            ("warning", f"v1s/{row['uid']}/labels_rgb", "4 mask files the readers do not use (1.png, 2.png, 3.png, ")
            for row in metadata(tmp_path / "metadata.csv")
            if row["label"] == "v1s" and row["split"] == "train"
        ]
    assert_problems(report, expected)
    assert report.format().startswith(f"{layout} dataset at {tmp_path}: OK (0 errors, ")


@pytest.mark.parametrize("layout", MAKERS)
def test_every_broken_file_is_reported(tmp_path, layout):
    cases = ["missing_frame", "wrong_rate", "corrupt_wav"] + (["unknown_colour"] if layout == "avss" else [])
    broken = MAKERS[layout](tmp_path, broken=cases)
    report = check_tree(tmp_path, layout)
    assert not report.ok
    for case in cases:
        assert errors_about(report, broken[case]), f"{case} ({broken[case]}) not reported:\n{report.format()}"
    assert "22050 Hz" in " ".join(p.message for p in errors_about(report, broken["wrong_rate"]))
    assert Path(broken["missing_frame"]).name in report.format()


@pytest.mark.parametrize("layout", MAKERS)
def test_shared_id_is_reported_as_a_leak(tmp_path, layout):
    shared = MAKERS[layout](tmp_path, broken=["shared_id"])["shared_id"]
    report = check_tree(tmp_path, layout)
    leaks = [p for p in report.errors if p.message.startswith(f"clip id {shared!r} is in both train and val")]
    assert len(leaks) == 1 and not report.ok


@pytest.mark.parametrize("layout", MAKERS)
def test_empty_split_is_reported(tmp_path, layout):
    MAKERS[layout](tmp_path, broken=["empty_split"])
    report = check_tree(tmp_path, layout)
    assert report.counts["val"] == 0
    assert errors_about(report, "the split 'val' has no clips")


@pytest.mark.parametrize("layout", MAKERS)
def test_missing_column_is_reported(tmp_path, layout):
    column = MAKERS[layout](tmp_path, broken=["missing_column"])["missing_column"]
    report = check_tree(tmp_path, layout)
    assert errors_about(report, f"has no column {column!r}")


def test_missing_metadata_is_reported_not_raised(tmp_path):
    report = check_tree(tmp_path, "s4")
    assert not report.ok and errors_about(report, "s4_meta_data.csv")
    assert "FAILED" in report.format()


def test_counts_against_the_published_sizes(tmp_path, monkeypatch):
    make_ms3(tmp_path)
    report = check_tree(tmp_path, "ms3")
    assert report.published == {"train": 296, "val": 64, "test": 64}
    lines = report.format().splitlines()
    assert (
        lines[1]
        == "clips per split: train 3 of 296, val 2 of 64, test 2 of 64 (published sizes; this tree is a subset)"
    )
    assert report.problems == []  # a subset is noted, not a problem

    monkeypatch.setitem(check.PUBLISHED_SIZES, "ms3", {"train": 3, "val": 2, "test": 2})
    assert check_tree(tmp_path, "ms3").format().splitlines()[1].endswith("(published sizes; complete)")

    monkeypatch.setitem(check.PUBLISHED_SIZES, "ms3", {"train": 2, "val": 2, "test": 2})
    report = check_tree(tmp_path, "ms3")
    assert report.ok and report.format().splitlines()[1].endswith(
        "(published sizes; a split is larger, see the warnings)"
    )
    assert_problems(
        report, [("warning", "ms3_meta_data.csv", "the split 'train' has 3 clips, more than the 2 published")]
    )


def test_more_categories_than_published(tmp_path, monkeypatch):
    make_s4(tmp_path)
    monkeypatch.setitem(check.PUBLISHED_CATEGORIES, "s4", 2)
    report = check_tree(tmp_path, "s4")
    assert "clips per category (3 of 2 published categories):" in report.format()
    assert report.warnings[0].message == "3 category names, more than the 2 published; is one misspelt?"


def test_s4_frames_and_masks_against_the_layout(tmp_path):
    make_s4(tmp_path)
    rows = metadata(tmp_path / "s4_meta_data.csv")
    names = [row["name"] for row in rows]

    def folder(kind, i):
        return tmp_path / "s4_data" / kind / rows[i]["split"] / rows[i]["category"] / names[i]

    rng = np.random.default_rng(1)
    write_binary_mask(folder("gt_masks", 0) / f"{names[0]}_2.png", rng)  # S4 train: a mask for frame 1 only
    write_frame(folder("visual_frames", 3) / f"{names[3]}_6.png", rng)  # S4: 5 frames
    shutil.rmtree(folder("gt_masks", 4))  # every mask of a val clip
    (folder("visual_frames", 5) / f"{names[5]}_4.png").unlink()
    (folder("gt_masks", 6) / f"{names[6]}_2.png").unlink()
    report = check_tree(tmp_path, "s4")
    name0, name3, name4, name5, name6 = (names[i] for i in (0, 3, 4, 5, 6))
    assert_problems(
        report,
        [
            (
                "error",
                f"s4_data/gt_masks/val/male_speech/{name4}",
                f"mask folder missing (5 masks of clip '{name4}', split 'val'); {RESTORE} s4_meta_data.csv.",
            ),
            (
                "error",
                f"s4_data/visual_frames/test/playing_violin/{name5}/{name5}_4.png",
                f"missing frame (clip '{name5}', split 'test'); {RESTORE} s4_meta_data.csv.",
            ),
            (
                "error",
                f"s4_data/gt_masks/test/dog_barking/{name6}/{name6}_2.png",
                f"missing mask (clip '{name6}', split 'test'); {RESTORE} s4_meta_data.csv.",
            ),
            ("warning", "s4_meta_data.csv", "category 'male_speech' has no test clips"),
            ("warning", "s4_meta_data.csv", "category 'playing_violin' has no val clips"),
            (
                "warning",
                f"s4_data/gt_masks/train/dog_barking/{name0}",
                f"1 mask file the readers do not use ({name0}_2.png): the layout has 1 mask for this S4 train clip "
                f"({name0}_1.png); remove the others, or check the clip.",
            ),
            (
                "warning",
                f"s4_data/visual_frames/val/dog_barking/{name3}",
                f"1 frame file the readers do not use ({name3}_6.png): the layout has 5 frames for this S4 val clip "
                f"({name3}_1.png .. {name3}_5.png); remove the others, or check the clip.",
            ),
        ],
    )


def test_mask_problems(tmp_path):
    make_s4(tmp_path)
    masks = sorted((tmp_path / "s4_data" / "gt_masks" / "val").rglob("*.png"))
    soft = np.zeros((32, 32), dtype=np.uint8)
    soft[4:8, 4:8] = 128
    Image.fromarray(soft).save(masks[0])
    Image.fromarray(np.zeros((16, 32), dtype=np.uint8)).save(masks[1])
    report = check_tree(tmp_path, "s4")
    assert [(p.severity, p.file) for p in report.errors] == [("error", str(masks[0])), ("error", str(masks[1]))]
    assert report.errors[0].message.startswith(
        "values 128 besides 0 and 255 (16 pixels): masks must be binary. The readers take values from 128 as "
        "foreground and lower ones as background (as AVSBench's loaders do)"
    )
    assert report.errors[1].message.startswith("mask is 32×16 but its frame")


def test_ms3_masks_audio_and_unused_files(tmp_path):
    make_ms3(tmp_path)
    rows = metadata(tmp_path / "ms3_meta_data.csv")
    train, val, test = rows[0]["name"], rows[3]["name"], rows[5]["name"]
    masks = tmp_path / "ms3_data" / "gt_masks"
    soft = np.zeros((32, 32), dtype=np.uint8)
    soft[2:6, 2:6] = 1  # a 0/1 mask: read as empty (threshold 128), an error
    Image.fromarray(soft).save(masks / "train" / train / f"{train}_3.png")
    write_binary_mask(masks / "val" / val / f"{val}_6.png", np.random.default_rng(1))  # MS3: 5 masks
    short = tmp_path / "ms3_data" / "audio_wav" / "test" / f"{test}.wav"
    sf.write(short, np.zeros((16000 * 3, 2), dtype=np.float32), 16000)  # stereo is fine in AVSBench; short is not
    report = check_tree(tmp_path, "ms3")
    assert not report.ok
    assert_problems(
        report,
        [
            (
                "error",
                f"ms3_data/gt_masks/train/{train}/{train}_3.png",
                "values 1 besides 0 and 255 (16 pixels): masks must be binary. The readers take values from 128 as "
                "foreground and lower ones as background (as AVSBench's loaders do), so e.g. a 0/1 mask reads as "
                "empty. Re-export the mask with 0 for background and 255 for the sounding objects.",
            ),
            (
                "warning",
                f"ms3_data/gt_masks/val/{val}",
                f"1 mask file the readers do not use ({val}_6.png): the layout has 5 masks for this MS3 val clip "
                f"({val}_1.png .. {val}_5.png); remove the others, or check the clip.",
            ),
            (
                "warning",
                f"ms3_data/audio_wav/test/{test}.wav",
                "3.00 s long, shorter than the clip's 5 s: zero-padded when read.",
            ),
        ],
    )


def test_avss_palette_frames_and_labels(tmp_path):
    broken = make_avss(tmp_path, broken=["unknown_colour"])
    rows = metadata(tmp_path / "metadata.csv")
    uid = {(r["label"], r["split"]): r["uid"] for r in reversed(rows)}  # the first clip of each subset and split
    v1s = [r["uid"] for r in rows if r["label"] == "v1s" and r["split"] == "train"]
    v1m_val, v2_test = f"v1m/{uid['v1m', 'val']}", f"v2/{uid['v2', 'test']}"
    write_frame(tmp_path / v1m_val / "frames" / "5.jpg", np.random.default_rng(1))  # v1m: 5 frames
    (tmp_path / v2_test / "labels_rgb" / "7.png").unlink()  # v2: 10 labels
    report = check_tree(tmp_path, "avss")
    label = Path(broken["unknown_colour"]).relative_to(tmp_path)
    assert_problems(
        report,
        [
            (
                "error",
                str(label),
                f"{label} has colours outside the VOC palette of 8 classes: RGB(1, 2, 3) × 6 pixels. Label images "
                "must use palette colours only",
            ),
            (
                "error",
                f"{v2_test}/labels_rgb/7.png",
                f"missing mask (clip '{uid['v2', 'test']}', split 'test'); {RESTORE} metadata.csv.",
            ),
            *[("warning", f"v1s/{u}/labels_rgb", "4 mask files the readers do not use") for u in v1s],
            (
                "warning",
                f"{v1m_val}/frames",
                "1 frame file the readers do not use (5.jpg): the layout has 5 frames for this v1m val clip "
                "(0.jpg .. 4.jpg); remove the others, or check the clip.",
            ),
        ],
    )


def test_short_audio_is_a_warning(tmp_path):
    make_ms3(tmp_path)
    wav = next((tmp_path / "ms3_data" / "audio_wav" / "test").glob("*.wav"))
    sf.write(wav, np.zeros(16000 * 4, dtype=np.float32), 16000)
    report = check_tree(tmp_path, "ms3")
    assert report.ok and len(report.warnings) == 1
    assert report.warnings[0].file == str(wav) and "4.00 s long" in report.warnings[0].message


def test_music_broken_cases(tmp_path):
    cases = ["stereo", "short_audio", "extra_frames", "shared_id_other_class", "renamed_copy"]
    broken = make_music(tmp_path, seconds=2.0, broken=cases)
    first = metadata(tmp_path / "train.csv")[0]["audio"]
    shared, copy = broken["shared_id_other_class"], Path(broken["renamed_copy"]).relative_to(tmp_path)
    report = check_tree(tmp_path, "music")
    assert report.counts == {"train": 6, "val": 3, "test": 5}
    assert_problems(
        report,
        [
            (
                "error",
                "train.csv",
                f"clip id {shared!r} is in both train and test, a leak between splits: train.csv line 2 ({first}); "
                f"test.csv line 6 (audio/cello/{shared}.wav). Keep it in one split only.",
            ),
            (
                "error",
                str(Path(broken["stereo"]).relative_to(tmp_path)),
                "2 channels, but the prepared layout is mono (the readers would average them): re-run the "
                "preparation, or downmix the file to mono.",
            ),
            (
                "error",
                "train.csv",
                "identical audio under different names in both train and test, a leak between splits even when "
                f"renamed: train.csv line 2 ({first}); test.csv line 5 ({copy}). Keep the recording in one split only.",
            ),
            (
                "warning",
                str(Path(broken["short_audio"]).relative_to(tmp_path)),
                "0.50 s long, but its 16 frames cover 2.00 s at 8 fps: the frames past the audio are never used.",
            ),
            (
                "warning",
                str(Path(broken["extra_frames"]).relative_to(tmp_path)),
                "2 files besides the 16 frames that val.csv line 2 lists (000017.jpg, 000018.jpg): unused; fix "
                "n_frames, or remove them.",
            ),
        ],
    )


def test_music_leak_in_three_splits_is_one_error(tmp_path):
    shared = make_music(tmp_path, seconds=2.0, broken=["shared_id"])["shared_id"]
    row = metadata(tmp_path / "val.csv")[-1]
    append_row(tmp_path / "test.csv", [row["audio"], row["frames"], row["n_frames"], row["label"]])
    report = check_tree(tmp_path, "music")
    assert_problems(
        report,
        [
            (
                "error",
                "train.csv",
                f"clip id {shared!r} is in train, val and test, a leak between splits: train.csv line 2 "
                f"({row['audio']}); val.csv line 5 ({row['audio']}); test.csv line 5 ({row['audio']}).",
            )
        ],
    )


def test_music_class_missing_from_a_split(tmp_path):
    make_music(tmp_path, seconds=2.0)
    val = (tmp_path / "val.csv").read_text().splitlines()
    (tmp_path / "val.csv").write_text("\n".join(line for line in val if ",cello" not in line) + "\n")
    train = (tmp_path / "train.csv").read_text().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(line for line in train if ",violin" not in line) + "\n")
    report = check_tree(tmp_path, "music")
    assert report.ok and report.groups["cello"] == {"train": 2, "val": 0, "test": 1}
    assert_problems(
        report,
        [
            ("warning", "val.csv", "class 'cello' has no val clips (train 2, test 1): it is not evaluated on val. "),
            (
                "warning",
                "train.csv",
                f"class 'violin' has no train clips (val 1, test 1): models never see it in training. {REBALANCE}",
            ),
        ],
    )


def test_music_missing_frames_are_errors_extra_files_warnings(tmp_path):
    make_music(tmp_path, seconds=2.0)
    folder = next((tmp_path / "frames" / "cello").iterdir())
    (folder / "000008.jpg").unlink()  # the sampler reads frames by index: an error, not a count mismatch
    report = check_tree(tmp_path, "music")
    assert [(p.severity, p.file) for p in report.problems] == [("error", str(folder))]
    assert report.problems[0].message.startswith("missing 1 of the 16 frames that ")
    assert report.problems[0].message.endswith(
        " lists (000008.jpg); re-run the preparation of this clip, or fix n_frames."
    )


def test_music_checks_the_configured_rate(tmp_path):
    make_music(tmp_path, seconds=2.0, sample_rate=16000)
    assert not check_tree(tmp_path, "music").ok
    assert check_tree(tmp_path, "music", sample_rate=16000).ok


def test_unknown_layout():
    with pytest.raises(ValueError, match=r"layout"):
        check_tree("/nowhere", "vggsound")  # type: ignore[arg-type]


def test_long_category_tables_list_only_the_incomplete_categories():
    report = CheckReport(layout="music", root=Path("/data"), counts={"train": 40, "val": 39, "test": 40})
    report.group_kind = "class"
    report.groups = {f"c{i:02d}": {"train": 1, "val": int(i != 7), "test": 1} for i in range(40)}
    assert report.format().splitlines()[2:] == [
        "clips per class (40 classes):",
        "  class  train  val  test",
        "  c07        1    0     1",
        "  ... and 39 more classes, each with clips in every split",
    ]


GOLDEN = """\
s4 dataset at ROOT: FAILED (2 errors, 3 warnings)
clips per split: train 3 of 3452, val 2 of 740, test 2 of 740 (published sizes; this tree is a subset)
clips per category (3 of 23 published categories):
  category        train  val  test
  dog_barking         1    1     1
  male_speech         1    1     0
  playing_violin      1    0     1
errors:
  s4_meta_data.csv: clip id '0NFqtcebkYO' is in both train and val, a leak between splits: s4_meta_data.csv line 2; \
s4_meta_data.csv line 5. Keep it in one split only.
  s4_data/visual_frames/train/dog_barking/0NFqtcebkYO/0NFqtcebkYO_3.png: missing frame (clip '0NFqtcebkYO', split \
'train'); restore it, or remove the clip's row from s4_meta_data.csv.
warnings:
  s4_meta_data.csv: category 'male_speech' has no test clips (train 1, val 1): it is not evaluated on test. \
Rebalance the splits if this is not intended.
  s4_meta_data.csv: category 'playing_violin' has no val clips (train 1, test 1): it is not evaluated on val. \
Rebalance the splits if this is not intended.
  s4_data/gt_masks/train/male_speech/4FL8TNHI5rY: 1 mask file the readers do not use (4FL8TNHI5rY_5.png): the \
layout has 1 mask for this S4 train clip (4FL8TNHI5rY_1.png); remove the others, or check the clip."""


def test_golden_report(tmp_path):
    make_s4(tmp_path, broken=["missing_frame", "shared_id"])
    masks = tmp_path / "s4_data" / "gt_masks" / "train" / "male_speech" / "4FL8TNHI5rY"
    shutil.copyfile(masks / "4FL8TNHI5rY_1.png", masks / "4FL8TNHI5rY_5.png")
    assert check_tree(tmp_path, "s4").format().replace(str(tmp_path), "ROOT") == GOLDEN


def test_cli_prints_the_report_and_exits_1(tmp_path, capsys):
    from avtoolkit.cli import main

    shared = make_music(tmp_path, seconds=2.0, broken=["shared_id_other_class"])["shared_id_other_class"]
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", "music", str(tmp_path)])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert out == check_tree(tmp_path, "music").format() + "\n"
    assert out.startswith(f"music dataset at {tmp_path}: FAILED (1 error, 0 warnings)\n")
    assert f"  train.csv: clip id {shared!r} is in both train and test, a leak between splits: " in out


def test_cli_exits_0_on_warnings_only(tmp_path, capsys):
    from avtoolkit.cli import main

    make_s4(tmp_path)
    main(["data", "check", "s4", str(tmp_path)])
    assert capsys.readouterr().out.startswith(f"s4 dataset at {tmp_path}: OK (0 errors, 2 warnings)\n")


# Bad input never passes silently: each case is a broken copy of a tiny tree, checked as a user would
# (`avtoolkit data check LAYOUT ROOT`), with the exit status and the report line that names the file.


def run_check(capsys, layout, root):
    """``avtoolkit data check`` as the user runs it: (exit status, printed report)."""
    from avtoolkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", layout, str(root)])
    return exit_info.value.code, capsys.readouterr().out


def first_train_audio(root, layout):
    if layout == "music":
        return root / metadata(root / "train.csv")[0]["audio"]
    return next(clip.audio for clip in avsbench_clips(root, layout) if clip.split == "train")


@pytest.mark.parametrize("layout", MAKERS)
def test_cli_check_fails_on_nan_samples_naming_the_wav(tmp_path, capsys, layout):
    MAKERS[layout](tmp_path)
    wav = first_train_audio(tmp_path, layout)
    index = put_nonfinite(wav, 0.5)
    code, out = run_check(capsys, layout, tmp_path)
    assert code == 1
    fix = (
        "re-run the preparation of this clip, or remove the row."
        if layout == "music"
        else f"re-create it, or remove the clip's row from {METADATA_FILES[layout]}."
    )
    rate = 11025 if layout == "music" else 16000
    assert index == round(0.5 * rate)
    assert (
        f"\n  {wav.relative_to(tmp_path)}: 1 non-finite sample (NaN or infinity), the first at 0.50 s (sample "
        f"{index}): the readers refuse the file, as losses and metrics would be NaN; {fix}\n"
    ) in out
    assert out.startswith(f"{layout} dataset at {tmp_path}: FAILED (1 error, ")


def test_every_non_finite_sample_is_counted(tmp_path):
    make_music(tmp_path, seconds=2.0)
    wav = first_train_audio(tmp_path, "music")
    put_nonfinite(wav, 1.5, float("inf"))
    put_nonfinite(wav, 0.25, float("-inf"))
    put_nonfinite(wav, 1.0)
    (problem,) = check_tree(tmp_path, "music").errors
    assert problem.file == str(wav)
    assert problem.message.startswith("3 non-finite samples (NaN or infinity), the first at 0.25 s (sample 2756): ")


def test_cli_check_fails_on_empty_and_unreadable_frames(tmp_path, capsys):
    make_music(tmp_path, seconds=2.0)
    row = metadata(tmp_path / "train.csv")[0]
    frames = tmp_path / row["frames"]
    make_empty(frames / "000003.jpg")
    make_empty(frames / "000009.jpg")
    write_not_a_picture(frames / "000005.jpg")
    code, out = run_check(capsys, "music", tmp_path)
    assert code == 1
    assert out.startswith(f"music dataset at {tmp_path}: FAILED (2 errors, 0 warnings)\n")
    assert (
        f"\n  {row['frames']}: 2 empty frame files (0 bytes) among the 16 that train.csv line 2 lists (000003.jpg, "
        "000009.jpg); re-run the preparation of this clip (the readers fail on them).\n"
    ) in out
    assert (
        f"\n  {row['frames']}: 1 frame file of the 16 that train.csv line 2 lists cannot be read as a picture "
        f"(000005.jpg: cannot identify image file '{row['frames']}/000005.jpg'); re-run the preparation of this clip "
        "(the readers fail on them).\n"
    ) in out


@pytest.mark.parametrize(("layout", "value"), [("s4", 3), ("ms3", 1), ("s4", 200)])
def test_cli_check_fails_on_mask_values_besides_0_and_255(tmp_path, capsys, layout, value):
    MAKERS[layout](tmp_path)
    clip = next(clip for clip in avsbench_clips(tmp_path, layout) if clip.split == "val")
    mask = clip.masks[1]
    assert mask is not None
    n = paint_mask(mask, value)
    code, out = run_check(capsys, layout, tmp_path)
    assert code == 1
    assert out.startswith(f"{layout} dataset at {tmp_path}: FAILED (1 error, ")
    assert (
        f"\n  {mask.relative_to(tmp_path)}: values {value} besides 0 and 255 ({n} pixels): masks must be binary. The "
        "readers take values from 128 as foreground and lower ones as background (as AVSBench's loaders do), so e.g. "
        "a 0/1 mask reads as empty. Re-export the mask with 0 for background and 255 for the sounding objects.\n"
    ) in out


def test_cli_check_says_a_truncated_wav_is_shorter_than_its_frames(tmp_path, capsys, music_tree):
    root = copy_tree(music_tree, tmp_path / "music")
    row = metadata(root / "train.csv")[0]
    truncate_wav(root / row["audio"], 2.0)  # 6.5 s of frames
    code, out = run_check(capsys, "music", root)
    assert code == 1
    assert out.startswith(f"music dataset at {root}: FAILED (1 error, 0 warnings)\n")
    assert out.endswith(
        f"\nerrors:\n  train.csv line 2: {row['audio']} is 2.0 s long but its 52 frames cover 6.5 s at 8 fps: the "
        "audio is shorter than its frames (a truncated file?). Re-extract the audio (re-run the preparation of this "
        "clip) or drop the clip. (If every clip is reported so, the frames were extracted at a higher rate than 8 fps: "
        "set fps to it.)\n"
    )
