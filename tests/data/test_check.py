import numpy as np
import pytest
import soundfile as sf
from fixtures.make_avsbench import make_avss, make_ms3, make_s4
from fixtures.make_music import make_music
from PIL import Image

from avtoolkit.data.check import check_tree

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


def errors_about(report, text):
    return [p for p in report.errors if text in p.file or text in p.message]


@pytest.mark.parametrize("layout", MAKERS)
def test_clean_tree_is_ok(tmp_path, layout):
    MAKERS[layout](tmp_path)
    report = check_tree(tmp_path, layout)
    assert report.ok and report.problems == []
    assert report.counts == COUNTS[layout]
    text = report.format()
    assert f"{layout} dataset at {tmp_path}: OK" in text and "train " in text


@pytest.mark.parametrize("layout", MAKERS)
def test_every_broken_file_is_reported(tmp_path, layout):
    cases = ["missing_frame", "wrong_rate", "corrupt_wav"] + (["unknown_colour"] if layout == "avss" else [])
    broken = MAKERS[layout](tmp_path, broken=cases)
    report = check_tree(tmp_path, layout)
    assert not report.ok
    for case in cases:
        assert errors_about(report, broken[case]), f"{case} ({broken[case]}) not reported:\n{report.format()}"
    assert "22050 Hz" in " ".join(p.message for p in errors_about(report, broken["wrong_rate"]))
    assert broken["missing_frame"] in report.format()


@pytest.mark.parametrize("layout", MAKERS)
def test_shared_id_is_reported_as_a_leak(tmp_path, layout):
    shared = MAKERS[layout](tmp_path, broken=["shared_id"])["shared_id"]
    report = check_tree(tmp_path, layout)
    leaks = errors_about(report, f"clip id {shared!r} is in both train and val")
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


def test_mask_problems(tmp_path):
    make_s4(tmp_path)
    masks = sorted((tmp_path / "s4_data" / "gt_masks" / "val").rglob("*.png"))
    soft = np.zeros((32, 32), dtype=np.uint8)
    soft[4:8, 4:8] = 128
    Image.fromarray(soft).save(masks[0])
    Image.fromarray(np.zeros((16, 32), dtype=np.uint8)).save(masks[1])
    report = check_tree(tmp_path, "s4")
    assert [(p.severity, p.file) for p in report.problems] == [
        ("warning", str(masks[0])),
        ("error", str(masks[1])),
    ]
    assert "values 128 besides 0/255" in report.problems[0].message
    assert "mask is 32×16 but its frame" in report.problems[1].message


def test_short_audio_is_a_warning(tmp_path):
    make_ms3(tmp_path)
    wav = next((tmp_path / "ms3_data" / "audio_wav" / "test").glob("*.wav"))
    sf.write(wav, np.zeros(16000 * 4, dtype=np.float32), 16000)
    report = check_tree(tmp_path, "ms3")
    assert report.ok and len(report.warnings) == 1
    assert report.warnings[0].file == str(wav) and "4.00 s long" in report.warnings[0].message


def test_music_frame_count_mismatch_is_a_warning(tmp_path):
    make_music(tmp_path, seconds=2.0)
    folder = next((tmp_path / "frames" / "cello").iterdir())
    (folder / "000008.jpg").unlink()
    report = check_tree(tmp_path, "music")
    assert report.ok
    assert [(p.file, p.message.split(" but")[0]) for p in report.warnings] == [(str(folder), "holds 15 frames")]


def test_music_checks_the_configured_rate(tmp_path):
    make_music(tmp_path, seconds=2.0, sample_rate=16000)
    assert not check_tree(tmp_path, "music").ok
    assert check_tree(tmp_path, "music", sample_rate=16000).ok


def test_unknown_layout():
    with pytest.raises(ValueError, match=r"layout"):
        check_tree("/nowhere", "vggsound")  # type: ignore[arg-type]
