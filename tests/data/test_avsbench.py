import json
import re
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures.break_trees import paint_mask, put_nonfinite
from fixtures.make_avsbench import (
    AVSS_CLASSES,
    AVSS_COLOURS,
    S4_CATEGORIES,
    UNKNOWN_PIXELS,
    make_avss,
    make_ms3,
    make_s4,
)
from PIL import Image

from avtoolkit.data import avsbench, avsbench_layout, batch
from avtoolkit.data.avsbench import (
    NO_LABEL,
    AVSSDataset,
    MS3Dataset,
    S4Dataset,
    decode_palette,
    voc_palette,
)
from avtoolkit.data.avsbench_layout import decode_palette_array, voc_palette_array
from avtoolkit.data.errors import DatasetError

SIZE = 24  # fixtures are 32×32: every read resizes


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("avsbench")
    make_s4(root / "s4")
    make_ms3(root / "ms3")
    make_avss(root / "avss")
    return root


def assert_sample(sample, T, L):
    keys = {batch.FRAMES, batch.WAVEFORM, batch.WAVEFORM_LENGTH, batch.MASKS, batch.MASK_VALID, batch.LABELS}
    assert set(sample) == keys
    assert 0 < int(sample[batch.WAVEFORM_LENGTH]) <= L
    assert not sample[batch.WAVEFORM][int(sample[batch.WAVEFORM_LENGTH]) :].any()
    assert sample[batch.FRAMES].shape == (T, 3, SIZE, SIZE) and sample[batch.FRAMES].dtype == torch.uint8
    assert sample[batch.WAVEFORM].shape == (L,) and sample[batch.WAVEFORM].dtype == torch.float32
    assert sample[batch.MASKS].shape == (T, SIZE, SIZE) and sample[batch.MASKS].dtype == torch.int64
    assert sample[batch.MASK_VALID].shape == (T,) and sample[batch.MASK_VALID].dtype == torch.bool
    assert sample[batch.LABELS].shape == () and sample[batch.LABELS].dtype == torch.int64
    assert not sample[batch.MASKS][~sample[batch.MASK_VALID]].any()  # no ground truth: zero masks


# --- S4 ---------------------------------------------------------------------------------------------------


def test_s4_train_has_a_mask_for_frame_1_only(trees):
    dataset = S4Dataset(trees / "s4", "train", image_size=SIZE)
    assert len(dataset) == 3
    assert dataset.category_names == tuple(sorted(S4_CATEGORIES))
    for i in range(len(dataset)):
        sample = dataset[i]
        assert_sample(sample, T=5, L=80000)
        assert sample[batch.MASK_VALID].tolist() == [True, False, False, False, False]
        assert set(sample[batch.MASKS].unique().tolist()) == {0, 1}
        category = dataset.clips[i].category
        assert dataset.category_names[sample[batch.LABELS]] == category


@pytest.mark.parametrize("split", ["val", "test"])
def test_s4_eval_splits_have_five_masks(trees, split):
    dataset = S4Dataset(trees / "s4", split, image_size=SIZE)
    assert len(dataset) == 2
    assert dataset[0][batch.MASK_VALID].all()


def test_s4_reads_the_files_of_the_named_clip(trees):
    dataset = S4Dataset(trees / "s4", "val", image_size=32)  # native size: exact comparison
    name, category = dataset.names[1], dataset.clips[1].category
    folder = trees / "s4" / "s4_data"
    sample = dataset[1]
    frame = np.array(Image.open(folder / "visual_frames" / "val" / category / name / f"{name}_3.png"))
    assert torch.equal(sample[batch.FRAMES][2], torch.from_numpy(frame).permute(2, 0, 1))
    mask = np.array(Image.open(folder / "gt_masks" / "val" / category / name / f"{name}_4.png"))
    assert torch.equal(sample[batch.MASKS][3], torch.from_numpy(mask > 0).long())
    audio, _ = sf.read(folder / "audio_wav" / "val" / category / f"{name}.wav", dtype="float32")
    assert torch.allclose(sample[batch.WAVEFORM], torch.from_numpy(audio))


def test_s4_short_audio_is_zero_padded_and_long_audio_cropped(trees, tmp_path):
    make_s4(tmp_path)
    dataset = S4Dataset(tmp_path, "test", image_size=SIZE)
    short = dataset.clips[0].audio
    sf.write(short, np.full(16000 * 3, 0.5, dtype=np.float32), 16000)
    sf.write(dataset.clips[1].audio, np.full(16000 * 7, 0.25, dtype=np.float32), 16000)
    padded, cropped = dataset[0][batch.WAVEFORM], dataset[1][batch.WAVEFORM]
    assert padded.shape == cropped.shape == (80000,)
    assert torch.allclose(padded[:48000], torch.tensor(0.5)) and not padded[48000:].any()
    assert torch.allclose(cropped, torch.tensor(0.25))


# --- MS3 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_ms3_has_five_masks_in_every_split_and_no_label(trees, split):
    dataset = MS3Dataset(trees / "ms3", split, image_size=SIZE)
    sample = dataset[0]
    assert_sample(sample, T=5, L=80000)
    assert sample[batch.MASK_VALID].all()
    assert sample[batch.LABELS] == NO_LABEL
    assert set(sample[batch.MASKS].unique().tolist()) == {0, 1}


def test_ms3_frames_come_from_the_mp4_infix_folder(trees):
    dataset = MS3Dataset(trees / "ms3", "train", image_size=32)
    name = dataset.names[0]
    frame = np.array(Image.open(trees / "ms3" / "ms3_data" / "visual_frames" / name / f"{name}.mp4_5.png"))
    assert torch.equal(dataset[0][batch.FRAMES][4], torch.from_numpy(frame).permute(2, 0, 1))


# --- AVSS -------------------------------------------------------------------------------------------------


def test_voc_palette_matches_the_published_colours():
    palette = voc_palette(256)
    assert [tuple(c) for c in palette[: len(AVSS_COLOURS)].tolist()] == list(AVSS_COLOURS)
    assert tuple(palette[15].tolist()) == (192, 128, 128)  # VOC "person"
    assert tuple(palette[255].tolist()) == (224, 224, 192)  # VOC "void"
    assert len({tuple(c) for c in palette.tolist()}) == 256


def test_decode_palette_known_colours():
    palette = voc_palette(71)
    indices = torch.tensor([[0, 1, 70], [15, 15, 2]])
    rgb = palette[indices].permute(2, 0, 1)
    assert torch.equal(decode_palette(rgb, 71, "x.png"), indices)


def test_the_palette_tensor_forms_wrap_the_array_forms():
    assert np.array_equal(voc_palette(256).numpy(), voc_palette_array(256))
    indices = np.array([[0, 1, 70], [15, 15, 2]])
    rgb = voc_palette_array(71)[indices]
    assert np.array_equal(decode_palette_array(rgb, 71, "x.png"), indices)
    assert torch.equal(decode_palette(torch.from_numpy(rgb).permute(2, 0, 1), 71, "x.png"), torch.from_numpy(indices))


def test_the_on_disk_index_is_re_exported_from_the_datasets_module():
    for name in ("SegClip", "read_csv", "field", "s4_clip", "avsbench_clips", "read_label2idx", "MASK_THRESHOLD"):
        assert getattr(avsbench, name) is getattr(avsbench_layout, name)


def test_decode_palette_unknown_colour_names_file_colour_and_count():
    rgb = voc_palette(8)[torch.tensor([[0, 1, 2], [3, 4, 5]])].permute(2, 0, 1).clone()
    rgb[:, 0, :2] = torch.tensor([1, 2, 3], dtype=torch.uint8)[:, None]
    with pytest.raises(DatasetError, match=r"labels/0\.png .*RGB\(1, 2, 3\) × 2 pixels"):
        decode_palette(rgb, 8, "labels/0.png")
    # A colour of the full palette beyond the dataset's classes is unknown too, never background.
    with pytest.raises(DatasetError, match=r"RGB\(0, 0, 128\)"):
        decode_palette(voc_palette(8)[torch.tensor([[4]])].permute(2, 0, 1), 4, "y.png")


def avss_clip(dataset, subset):
    """Index of the first clip of a subset in a dataset."""
    return next(i for i, clip in enumerate(dataset.clips) if clip.audio.parent.parent.name == subset)


def test_avss_v1s_train_has_frame_0_only_and_is_padded(trees):
    dataset = AVSSDataset(trees / "avss", "train", image_size=SIZE)
    assert dataset.class_names == AVSS_CLASSES
    sample = dataset[avss_clip(dataset, "v1s")]
    assert_sample(sample, T=10, L=160000)
    assert sample[batch.MASK_VALID].tolist() == [True] + [False] * 9
    assert not sample[batch.FRAMES][5:].any()
    assert not sample[batch.WAVEFORM][80000:].any() and sample[batch.WAVEFORM][:80000].any()


def test_avss_v1m_padding_and_v2_full(trees):
    dataset = AVSSDataset(trees / "avss", "train", image_size=SIZE)
    v1m = dataset[avss_clip(dataset, "v1m")]
    assert v1m[batch.MASK_VALID].tolist() == [True] * 5 + [False] * 5
    assert v1m[batch.FRAMES][:5].any() and not v1m[batch.FRAMES][5:].any()
    v2 = dataset[avss_clip(dataset, "v2")]
    assert v2[batch.MASK_VALID].all() and v2[batch.FRAMES][9].any()


def test_avss_v1s_eval_has_every_real_frame_labelled(trees):
    dataset = AVSSDataset(trees / "avss", "val", image_size=SIZE, subsets=("v1s",))
    assert len(dataset) == 1
    assert dataset[0][batch.MASK_VALID].tolist() == [True] * 5 + [False] * 5


def test_avss_masks_are_class_indices_and_label_the_dominant_class(trees):
    dataset = AVSSDataset(trees / "avss", "test", image_size=32, subsets=("v2",))
    sample = dataset[0]
    clip = dataset.clips[0]
    label = np.array(Image.open(clip.audio.parent / "labels_rgb" / "7.png"))
    expected = np.zeros(label.shape[:2], dtype=np.int64)
    for index, colour in enumerate(AVSS_COLOURS):
        expected[(label == colour).all(-1)] = index
    assert torch.equal(sample[batch.MASKS][7], torch.from_numpy(expected))
    counts = torch.bincount(sample[batch.MASKS].flatten(), minlength=len(AVSS_CLASSES))
    counts[0] = 0
    assert sample[batch.LABELS] == counts.argmax() and sample[batch.LABELS] > 0


def test_avss_subsets_and_n_frames(trees):
    assert len(AVSSDataset(trees / "avss", "train", subsets=("v1s",))) == 2
    assert len(AVSSDataset(trees / "avss", "train", subsets=("v1m", "v2"))) == 2
    dataset = AVSSDataset(trees / "avss", "test", image_size=SIZE, subsets=("v2",), n_frames=5)
    sample = dataset[0]
    assert_sample(sample, T=5, L=80000)
    assert sample[batch.MASK_VALID].all()


def test_avss_bad_arguments():
    with pytest.raises(ValueError, match=r"subsets"):
        AVSSDataset("/nowhere", "train", subsets=("v3",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n_frames"):
        AVSSDataset("/nowhere", "train", n_frames=0)


def test_avss_label2idx_must_be_one_based(tmp_path):
    make_avss(tmp_path)
    (tmp_path / "label2idx.json").write_text(json.dumps({"background": 0, "man": 1}))
    with pytest.raises(DatasetError, match=r"label2idx.json must map .* 1\.\.C"):
        AVSSDataset(tmp_path, "train")


# --- broken trees -----------------------------------------------------------------------------------------

DATASETS = {"s4": (make_s4, S4Dataset), "ms3": (make_ms3, MS3Dataset), "avss": (make_avss, AVSSDataset)}
METADATA = {"s4": "s4_meta_data.csv", "ms3": "ms3_meta_data.csv", "avss": "metadata.csv"}


@pytest.mark.parametrize("layout", DATASETS)
def test_missing_frame_fails_construction_naming_it(tmp_path, layout):
    make, dataset = DATASETS[layout]
    broken = make(tmp_path, broken=["missing_frame"])
    with pytest.raises(DatasetError, match=r"not found") as error:
        dataset(tmp_path, "train")
    assert broken["missing_frame"] in str(error.value)


@pytest.mark.parametrize("layout", DATASETS)
@pytest.mark.parametrize("case", ["wrong_rate", "corrupt_wav"])
def test_bad_audio_fails_at_getitem_naming_it(tmp_path, layout, case):
    make, dataset_class = DATASETS[layout]
    broken = make(tmp_path, broken=[case])
    dataset = dataset_class(tmp_path, "train", image_size=SIZE)  # construction only checks existence
    index = next(i for i, clip in enumerate(dataset.clips) if str(clip.audio) == broken[case])
    with pytest.raises(DatasetError, match=r"22050 Hz but 16000 Hz" if case == "wrong_rate" else "cannot") as error:
        dataset[index]
    assert broken[case] in str(error.value)


@pytest.mark.parametrize("layout", DATASETS)
def test_empty_split_names_split_and_file(tmp_path, layout):
    make, dataset = DATASETS[layout]
    make(tmp_path, broken=["empty_split"])
    with pytest.raises(DatasetError, match=rf"split 'val'.*no clips in {re.escape(str(tmp_path / METADATA[layout]))}"):
        dataset(tmp_path, "val")
    assert len(dataset(tmp_path, "train")) > 0


@pytest.mark.parametrize("layout", DATASETS)
def test_missing_column_names_file_and_column(tmp_path, layout):
    make, dataset = DATASETS[layout]
    column = make(tmp_path, broken=["missing_column"])["missing_column"]
    with pytest.raises(DatasetError, match=rf"{re.escape(str(tmp_path / METADATA[layout]))} has no column '{column}'"):
        dataset(tmp_path, "train")


def test_missing_metadata_file(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(f"metadata file not found: {tmp_path / 's4_meta_data.csv'}")):
        S4Dataset(tmp_path, "train")


def test_unknown_split_value_names_the_row(tmp_path):
    make_ms3(tmp_path)
    csv = tmp_path / "ms3_meta_data.csv"
    csv.write_text(csv.read_text().replace(",val\n", ",valid\n", 1))
    with pytest.raises(DatasetError, match=r"ms3_meta_data.csv line \d+: unknown split 'valid'"):
        MS3Dataset(tmp_path, "train")


def test_unknown_colour_fails_at_getitem_naming_file_colour_and_count(tmp_path):
    broken = make_avss(tmp_path, broken=["unknown_colour"])
    dataset = AVSSDataset(tmp_path, "train", image_size=SIZE)
    index = next(i for i, clip in enumerate(dataset.clips) if str(clip.masks[0]) == broken["unknown_colour"])
    with pytest.raises(DatasetError, match=rf"RGB\(1, 2, 3\) × {UNKNOWN_PIXELS} pixels") as error:
        dataset[index]
    assert broken["unknown_colour"] in str(error.value)


@pytest.mark.parametrize("layout", DATASETS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_audio_fails_at_getitem_naming_the_wav(tmp_path, layout, value):
    make, dataset_class = DATASETS[layout]
    make(tmp_path)
    dataset = dataset_class(tmp_path, "train", image_size=SIZE)
    wav = dataset.clips[1].audio
    put_nonfinite(wav, 1.5, value)
    with pytest.raises(DatasetError) as error:
        dataset[1]
    assert str(error.value) == (
        f"{wav} has non-finite samples (NaN or infinity), the first read at 1.50 s (sample 24000): losses and metrics "
        "would be NaN. Re-create the file (re-run the preparation of this clip) or remove the clip; `avtoolkit data "
        "check` lists every such file."
    )
    assert torch.isfinite(dataset[0][batch.WAVEFORM]).all()  # the other clips read as before


def test_mask_values_besides_0_and_255_are_read_at_128_with_a_counted_warning(tmp_path):
    make_s4(tmp_path)
    dataset = S4Dataset(tmp_path, "val", image_size=32)  # native size: exact comparison
    masks = [mask for clip in dataset.clips for mask in clip.masks if mask is not None]
    assert len(masks) == 10
    expected = []
    for i, mask in enumerate(masks):
        paint_mask(mask, 3, (slice(0, 6), slice(0, 6)))  # e.g. a label index instead of 255
        paint_mask(mask, 200 if i % 2 else 100, (slice(26, 32), slice(26, 32)))
        expected.append(torch.from_numpy(np.array(Image.open(mask)) >= 128).long())
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always", UserWarning)

        def caught():
            return [str(w.message) for w in recorded if w.category is UserWarning]

        first = dataset[0]
        assert caught() == [
            f"{masks[0]}: mask values 3, 100 besides 0 and 255 (values from 128 are read as foreground, lower ones as "
            "background, as AVSBench's loaders do; e.g. a 0/1 mask reads as empty). Further such masks of the 'val' "
            "split are counted, not named one by one. Re-export the masks with 0 for background and 255 for the "
            f"sounding objects; `avtoolkit data check` on the tree of {tmp_path / 's4_meta_data.csv'} lists every "
            "such mask (an error there)."
        ]
        dataset[0]  # the same files again: counted once, no new warning
        assert len(caught()) == 1 and dataset.odd_masks == masks[:5]
        second = dataset[1]
        assert len(caught()) == 2 and dataset.odd_masks == masks
        assert caught()[1] == (
            f"10 masks of the 'val' split with values besides 0 and 255 read so far in this process (first: "
            f"{masks[0]}, {masks[1]}, {masks[2]}, ...); values from 128 are read as foreground, lower ones as "
            "background, as AVSBench's loaders do. Re-export the masks with 0 for background and 255 for the "
            f"sounding objects; `avtoolkit data check` on the tree of {tmp_path / 's4_meta_data.csv'} lists every "
            "such mask (an error there)."
        )
    assert torch.equal(torch.cat([first[batch.MASKS], second[batch.MASKS]]), torch.stack(expected))
    assert not first[batch.MASKS][0, :6, :6].any() and first[batch.MASKS][1, 26:, 26:].all()


def test_binary_masks_read_without_a_warning(trees):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for layout, dataset_class in (("s4", S4Dataset), ("ms3", MS3Dataset)):
            dataset = dataset_class(trees / layout, "test", image_size=SIZE)
            for i in range(len(dataset)):
                dataset[i]
            assert dataset.odd_masks == []
