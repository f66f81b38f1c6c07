import csv
import json
import random
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from fixtures.make_videos import FULL_START, MIN_SECONDS, SIZE, make_videos
from PIL import Image

from avtoolkit.data import prepare
from avtoolkit.data.check import check_tree
from avtoolkit.data.datamodules import SeparationDataModule
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.music import read_split
from avtoolkit.data.prepare import PARTIAL_DIR, REPORT_FILE, Entry, PrepareReport, plan_splits, prepare_separation
from avtoolkit.data.video import decode_audio_track

RATE, FPS, SHORT_SIDE = 11025, 8.0, 24
MUSIC = {"val_fraction": 0.2, "test_fraction": 0.2, "min_seconds": MIN_SECONDS, "short_side": SHORT_SIDE}
FAILURES = ("missing", "corrupt", "no_video", "no_audio", "too_short")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="module")
def music(fx, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "music"
    report = prepare_separation(fx.videos, [fx.music_json, fx.duet_json], out, workers=1, progress=False, **MUSIC)
    return out, report


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.name != REPORT_FILE}


def csv_ids(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [Path(row["audio"]).stem for row in csv.DictReader(f)]


def count_decodes(monkeypatch) -> list[str]:
    decoded: list[str] = []
    real = prepare.prepare_clip

    def counting(job):
        decoded.append(job.id)
        return real(job)

    monkeypatch.setattr(prepare, "prepare_clip", counting)
    return decoded


def test_music_report_is_exact(fx, music):
    out, report = music
    for name in FAILURES:
        assert getattr(report, name) == fx.music[name], name
    assert set(report.details) == {i for name in FAILURES for i in fx.music[name]}
    assert "cel_trunc.mp4" in report.details["cel_trunc"] and "1.5" in report.details["acc_short"]
    assert report.prepared == sorted(fx.music["good"] + fx.music["duet"]) and report.reused == []
    assert report.skipped_duets == report.unlisted == report.not_in_id_list == report.duplicates == []
    assert report.leaks == {}
    solo = [i for split in ("train", "val", "test") for i in report.splits[split]]
    assert sorted(solo) == fx.music["good"] and len(set(solo)) == len(solo)  # each good clip in one split
    assert report.splits["duet"] == ["duet_a"] and report.ok
    assert (out / REPORT_FILE).read_text() == report.format() + "\n"
    text = report.format()
    assert all(i in text for name in FAILURES for i in fx.music[name])
    for split in ("train", "val", "test", "duet"):
        assert sorted(csv_ids(out / f"{split}.csv")) == sorted(report.splits[split])


def test_music_tree_passes_check_and_loads(fx, music):
    out, report = music
    check = check_tree(out, "music", sample_rate=RATE, fps=FPS)
    assert check.ok, check.format()
    for split in ("train", "val", "test"):
        clips = read_split(out, split, sample_rate=RATE, fps=FPS)
        assert [c.id for c in clips] == report.splits[split]
        for clip in clips:
            assert clip.label == fx.labels[clip.id]
            assert sf.info(str(clip.audio)).channels == 1 and clip.sample_rate == RATE
            # the AAC track ends on a whole codec frame: at most one video frame (1/fps s) longer
            assert abs(clip.n_samples - fx.seconds[clip.id] * RATE) <= RATE / FPS
            assert abs(clip.n_frames - fx.seconds[clip.id] * FPS) <= 1
            assert len(list(clip.frames.glob("*.jpg"))) == clip.n_frames
            with Image.open(clip.frames / "000001.jpg") as image:  # short side resized to 24, aspect kept
                assert image.size == (SIZE[1] * SHORT_SIDE // SIZE[0], SHORT_SIDE)
    with open(out / "duet.csv", newline="") as f:
        duet = list(csv.DictReader(f))
    assert [(r["audio"], r["label"]) for r in duet] == [("audio/accordion+violin/duet_a.wav", "accordion violin")]
    assert (out / duet[0]["frames"] / "000016.jpg").is_file()
    datamodule = SeparationDataModule(out, window=8191, image_size=24, batch_size=2, num_workers=0)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["mixture"].shape == (2, 8191)


def test_rerun_is_a_no_op(fx, music, monkeypatch):
    out, first = music
    before, csvs = mtimes(out), {p.name: p.read_text() for p in out.glob("*.csv")}
    decoded = count_decodes(monkeypatch)
    report = prepare_separation(fx.videos, [fx.music_json, fx.duet_json], out, workers=1, progress=False, **MUSIC)
    assert report.prepared == [] and report.reused == first.prepared and report.splits == first.splits
    assert all(getattr(report, name) == getattr(first, name) for name in FAILURES)
    assert sorted(decoded) == sorted(i for name in FAILURES if name != "missing" for i in fx.music[name])
    assert mtimes(out) == before and {p.name: p.read_text() for p in out.glob("*.csv")} == csvs


def test_interrupted_clip_is_cleaned_and_redone(fx, music, tmp_path, monkeypatch):
    out = tmp_path / "music"
    shutil.copytree(music[0], out)
    wav, frames = out / "audio/cello/cel_c.wav", out / "frames/cello/cel_c.mp4"
    original = wav.read_bytes()
    wav.unlink()  # killed after moving the frames, before the wav
    (frames / "000009.jpg").unlink()
    stale = out / PARTIAL_DIR / "violin" / "vio_b" / "frames"
    stale.mkdir(parents=True)
    (stale / "000001.jpg").write_bytes(b"half a jpeg")
    (out / ".train.csv.x1y2.tmp").mkdir()  # a CSV write killed midway
    decoded = count_decodes(monkeypatch)
    report = prepare_separation(fx.videos, [fx.music_json, fx.duet_json], out, workers=1, progress=False, **MUSIC)
    assert report.prepared == ["cel_c"] and "cel_c" in decoded and "vio_b" not in decoded
    assert wav.read_bytes() == original and len(list(frames.glob("*.jpg"))) == 16
    assert not (out / PARTIAL_DIR).exists() and not (out / ".train.csv.x1y2.tmp").exists()
    assert check_tree(out, "music").ok


def test_two_workers_make_the_same_tree(fx, music, tmp_path):
    out = tmp_path / "music"
    report = prepare_separation(fx.videos, [fx.music_json, fx.duet_json], out, workers=2, progress=False, **MUSIC)
    first = music[1]
    assert report.format().replace(str(out), "OUT") == first.format().replace(str(first.out), "OUT")
    expected = files(music[0])
    produced = files(out)
    assert produced.keys() == expected.keys()
    assert all(produced[name] == expected[name] for name in expected if name != REPORT_FILE)


def test_vggsound_end_to_end(fx, tmp_path):
    out = tmp_path / "vggsound"
    report = prepare_separation(
        fx.videos, fx.vggsound_csv, out, val_fraction=0.34, min_seconds=MIN_SECONDS, workers=1, progress=False
    )
    assert report.id_format == "vggsound"
    assert report.missing == fx.vggsound["missing"] == ["vgM_000030"]
    assert report.prepared == fx.vggsound["good"]
    assert all(getattr(report, name) == [] for name in FAILURES if name != "missing")
    assert report.splits["test"] == ["vgC_000005", "vgG_000004"]  # the CSV's test split, as published
    assert sorted(report.splits["train"] + report.splits["val"]) == sorted(
        set(fx.vggsound["good"]) - set(report.splits["test"])
    )
    drawn = [fx.labels[i] for i in report.splits["val"]]  # one of the three train ids per label
    assert drawn.count("dog barking") == 1 and drawn.count("playing violin, fiddle") <= 1
    assert check_tree(out, "music").ok
    clips = {c.id: c for split in ("train", "val", "test") for c in read_split(out, split)}
    violin = next(c for c in clips.values() if c.label == "playing violin, fiddle")
    assert violin.audio.parent.name == "playing_violin_fiddle"
    # vgF.mp4 is the whole 13 s video: the clip is the 10 s from its start second
    cut = clips["vgF_000002"]
    assert cut.n_frames == 80 and cut.n_samples == 10 * RATE
    whole = decode_audio_track(fx.videos / "vggsound" / "vgF.mp4", RATE).numpy()
    audio, _ = sf.read(str(cut.audio), dtype="float32")
    assert abs(audio - whole[FULL_START * RATE : (FULL_START + 10) * RATE]).max() < 1e-3


def test_vggsound_split_lists_name_youtube_ids_and_repeated_lists_count_once(fx, tmp_path):
    val = tmp_path / "val.csv"  # CLIPSep style: a path whose stem is the bare YouTube id, then a clip id
    val.write_text("data/vggsound/audio/v/g/vgA.wav,data/vggsound/preprocessed/v/g/vgA,12,dog barking\nvgE_000000\n")
    report = prepare_separation(
        fx.videos,
        [fx.vggsound_csv] * 2,
        tmp_path / "out",
        val_ids=val,
        min_seconds=MIN_SECONDS,
        workers=1,
        progress=False,
    )
    assert report.duplicates == sorted(fx.vggsound["good"] + fx.vggsound["missing"])
    assert report.splits == {
        "train": ["vgB_000010", "vgF_000002", "vgD_000001"],  # sorted by label, then id
        "val": ["vgA_000000", "vgE_000000"],
        "test": ["vgC_000005", "vgG_000004"],
    }
    assert report.unlisted == [] and report.missing == ["vgM_000030"]


def test_split_lists_with_a_leak_fail_unless_keep_first(fx, tmp_path):
    out = tmp_path / "music"
    lists = {"train_ids": fx.train_ids, "val_ids": fx.val_ids, "test_ids": fx.test_ids}
    with pytest.raises(DatasetError, match=r"'acc_b' is in both train and test.*leak") as err:
        prepare_separation(fx.videos, fx.music_json, out, progress=False, **lists, **MUSIC)
    assert str(fx.train_ids) in str(err.value) and "keep_first" in str(err.value)
    assert not out.exists()  # nothing written
    report = prepare_separation(
        fx.videos, fx.music_json, out, keep_first=True, workers=1, progress=False, **lists, **MUSIC
    )
    assert report.leaks == {"acc_b": ["train", "test"]}
    assert report.splits == {
        "train": ["acc_a", "acc_b", "cel_a", "vio_a"],
        "val": ["cel_b", "vio_c"],
        "test": ["vio_b"],
    }
    assert report.not_in_id_list == ["zzz_unknown"]
    listed = {"acc_a", "acc_b", "cel_a", "vio_a", "cel_b", "vio_c", "vio_b"}
    assert report.unlisted == sorted(
        set(fx.labels) - listed - {"duet_a"} - {i for i in fx.labels if i.startswith("vg")}
    )
    assert report.prepared == sorted(listed) and report.failed == []  # the unlisted ids are not even looked at
    assert "acc_b: train, test" in (out / REPORT_FILE).read_text()
    assert check_tree(out, "music").ok


def test_duets_can_be_skipped(fx, tmp_path):
    out = tmp_path / "music"
    report = prepare_separation(fx.videos, fx.duet_json, out, duets="skip", progress=False, **MUSIC)
    assert report.skipped_duets == ["duet_a"] and report.prepared == [] and not report.ok
    assert not (out / "duet.csv").exists() and "duet_a" in report.format()


def entries(per_class: int, classes: str = "ab") -> list[Entry]:
    return [Entry(f"{c}{i:02d}", c, c, (f"{c}{i:02d}",), (f"{c}{i:02d}",)) for c in classes for i in range(per_class)]


def test_drawn_splits_are_per_class_seeded_and_order_free():
    def plan(items, seed=0):
        return plan_splits(items, {}, 0.2, 0.1, seed, False, PrepareReport(Path("out"), "music"))

    split_of = plan(entries(10))
    for label in "ab":
        counts = [
            sum(1 for i, s in split_of.items() if i[0] == label and s == split) for split in ("train", "val", "test")
        ]
        assert counts == [7, 2, 1]
    shuffled = entries(10)
    random.Random(1).shuffle(shuffled)
    assert plan(shuffled) == split_of
    assert plan(entries(10), seed=1) != split_of


def test_split_lists_read_ids_paths_and_headers(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("audio,frames,n_frames,label\n# note\naudio/cello/Ab-_1.wav,frames/cello/Ab-_1.mp4,3,cello\n\nXy\n")
    assert prepare.read_split_ids(path) == [("Ab-_1", f"{path} line 3"), ("Xy", f"{path} line 5")]
    path.write_text("Ab\nnot an id\n")
    with pytest.raises(DatasetError, match=r"list.csv line 2: 'not an id' is not a video id"):
        prepare.read_split_ids(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("ids.json", '{"videos": {"cello": ["a"]', r"ids.json is not valid JSON \(line 1"),
        ("ids.json", '{"cello": ["a"]}', r"ids.json has no 'videos' object"),
        ("ids.json", '{"videos": {"cello": "a"}}', r"ids.json class 'cello': expected a list of YouTube ids"),
        ("ids.csv", "a,0,dog,train\nb,0,dog\n", r"ids.csv line 2: expected 4 fields youtube_id,start_seconds"),
        ("ids.csv", "a,x,dog,train\n", r"ids.csv line 1: start_seconds must be a whole number"),
        ("ids.csv", "a,0,dog,holdout\n", r"ids.csv line 1: split must be one of train, val, test"),
        ("ids.txt", "a\n", r"cannot tell the format of the id list .*ids.txt.*format='music'"),
    ],
)
def test_malformed_id_lists_are_named(fx, tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=message):
        prepare_separation(fx.videos, tmp_path / name, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_tree_prepared_with_the_same_settings(fx, music, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train.csv").write_text("audio,frames,n_frames,label\n")
    with pytest.raises(DatasetError, match=r"other is not empty and is not a prepared tree \(no prepare.json\)"):
        prepare_settings = {**MUSIC, "progress": False}
        prepare_separation(fx.videos, fx.music_json, tmp_path / "other", **prepare_settings)
    with pytest.raises(DatasetError, match=r"prepared with other settings \(sample_rate: 11025 there, 16000 now\)"):
        prepare_separation(fx.videos, fx.music_json, music[0], sample_rate=16000, progress=False, **MUSIC)
    assert json.loads((music[0] / "prepare.json").read_text())["settings"]["sample_rate"] == RATE


def test_prepare_and_check_through_the_cli(fx, tmp_path, capsys):
    """`avtoolkit data prepare` prints the report and exits 0 on a usable tree; a leak in the split lists is 2."""
    from avtoolkit.cli import main

    out = tmp_path / "music"
    options = [f"--{k}={v}" for k, v in MUSIC.items()] + ["--workers=1", "--progress=false"]
    main(["data", "prepare", str(fx.videos), str(fx.music_json), str(out), f"--extra_lists+={fx.duet_json}", *options])
    printed = capsys.readouterr().out
    assert all(i in printed for i in fx.music["corrupt"] + fx.music["missing"])
    assert printed.strip() == (out / REPORT_FILE).read_text().strip()
    main(["data", "check", "music", str(out)])
    assert ": OK" in capsys.readouterr().out
    leak = ["--train_ids", str(fx.train_ids), "--test_ids", str(fx.test_ids)]
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", str(fx.videos), str(fx.music_json), str(tmp_path / "leak"), *leak, *options])
    assert exit_info.value.code == 2 and fx.leaked in capsys.readouterr().err
    assert not (tmp_path / "leak" / "train.csv").exists()
