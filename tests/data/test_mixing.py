from dataclasses import replace

import numpy as np
import pytest
import torch
from fixtures.break_trees import copy_tree, put_nonfinite

from avtoolkit.data.audio import read_audio
from avtoolkit.data.batch import FRAMES, LABELS, MIXTURE, MIXTURE_EMB, SOURCES, VISUAL_EMB
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.mixing import MixAndSeparate
from avtoolkit.data.music import read_split

WINDOW = 8191


def dataset(root, split="train", **kwargs):
    options = {"window": WINDOW, "frames_per_source": 3, "image_size": 24, "train": split == "train"}
    return MixAndSeparate(read_split(root, split), **{**options, **kwargs})


def test_sample_keys_shapes_and_mixing(music_tree):
    sample = dataset(music_tree, "val")[0]
    assert set(sample) == {MIXTURE, SOURCES, FRAMES, LABELS}
    assert sample[MIXTURE].shape == (WINDOW,) and sample[SOURCES].shape == (2, WINDOW)
    assert sample[FRAMES].shape == (2, 3, 3, 24, 24) and sample[FRAMES].dtype == torch.uint8
    assert torch.allclose(sample[SOURCES].sum(0), sample[MIXTURE])
    assert sample[LABELS][0] != sample[LABELS][1]  # partners of another class by default


def test_evaluation_samples_are_fixed_and_centred(music_tree):
    first, again = dataset(music_tree, "test")[1], dataset(music_tree, "test")[1]
    assert all(torch.equal(first[k], again[k]) for k in first)
    clips = read_split(music_tree, "test")
    source = first[SOURCES][0] * 2  # divided by N = 2, no gain at evaluation

    start = (clips[1].n_samples - WINDOW) // 2
    assert torch.allclose(source, read_audio(clips[1].audio, clips[1].sample_rate, start, WINDOW))


def test_training_samples_vary_and_follow_the_torch_seed(music_tree):
    data = dataset(music_tree)
    torch.manual_seed(0)
    a = data[0][MIXTURE]
    torch.manual_seed(0)
    assert torch.equal(a, data[0][MIXTURE])
    assert not torch.equal(data[0][MIXTURE], data[0][MIXTURE])


def test_training_sources_carry_their_random_gain(music_tree):
    data = dataset(music_tree)
    clips = read_split(music_tree, "train")
    measured = []
    for seed in range(12):
        recipe = data.recipe(0, (seed, 0))
        sources = data[(0, seed, 0)][SOURCES]
        for n, (i, start) in enumerate(zip(recipe.clips, recipe.starts, strict=True)):
            raw = read_audio(clips[i].audio, clips[i].sample_rate, start, WINDOW)  # the window, unscaled
            loud = raw.abs() > 1e-3
            gain = float((sources[n][loud] * 2 / raw[loud]).median())  # sources = clamp(raw · gain) / N, N = 2
            assert gain == pytest.approx(recipe.gains[n], rel=1e-4)
            measured.append(gain)
    assert min(measured) >= 0.5 and max(measured) <= 1.5  # U(0.5, 1.5)
    assert max(measured) - min(measured) > 0.5  # and really drawn: 24 draws span most of the range


def test_three_sources_all_of_different_classes(music_tree):
    labels = dataset(music_tree, n_sources=3)[2][LABELS]
    assert len(set(labels.tolist())) == 3


def test_same_class_partners_allowed_on_request(music_tree):
    data = dataset(music_tree, n_sources=2, same_class_partners=True)
    torch.manual_seed(1)
    assert any(len(set(data[i][LABELS].tolist())) == 1 for i in range(len(data)) for _ in range(4))


def test_short_clips_are_counted_and_left_out(music_tree):
    clips = read_split(music_tree, "train")
    short = [replace(clips[0], n_samples=100), *clips[1:]]
    with pytest.warns(UserWarning, match=r"1 of 6 clips are shorter than the 8191-sample window"):
        data = MixAndSeparate(short, window=WINDOW)
    assert data.n_skipped_short == 1 and len(data) == 5
    with (
        pytest.warns(UserWarning, match="6 of 6 clips"),
        pytest.raises(DatasetError, match="from 0 usable clips"),
    ):
        MixAndSeparate(clips, window=clips[0].n_samples + 1)


def test_too_few_classes_is_a_clear_error(music_tree):
    clips = read_split(music_tree, "train")
    one_class = [c for c in clips if c.label == clips[0].label]
    with pytest.raises(DatasetError, match="cannot mix 2 sources from 2 usable clips of 1 classes"):
        MixAndSeparate(one_class, window=WINDOW)


def test_frames_follow_the_window(music_tree):
    clips = read_split(music_tree, "test")
    data = dataset(music_tree, "test", frames_per_source=2)
    sample = data[0]
    # frames at the centres of the two window halves: distinct frames of the same clip
    assert not torch.equal(sample[FRAMES][0, 0], sample[FRAMES][0, 1])
    assert np.all(sample[FRAMES].numpy() >= 0) and clips


def test_a_fixed_training_pool_repeats_its_recipes_and_keys(music_tree):
    data = dataset(music_tree, fixed_mixtures=10)
    assert len(data) == 10
    assert data.recipe(3) == data.recipe(3) and data.recipe(3) != data.recipe(4)
    assert torch.equal(data[7][MIXTURE], data[7][MIXTURE])
    keys = {data.recipe(i).key(data.clips, WINDOW) for i in range(10)}
    assert len(keys) == 10  # distinct mixtures, distinct keys
    evaluation = dataset(music_tree, "val")
    assert evaluation.recipe(0).gains == (1.0, 1.0) and not any(evaluation.recipe(0).flips)
    with pytest.raises(ValueError, match="training sets only"):
        dataset(music_tree, "val", fixed_mixtures=4)


def test_embedding_lookups_replace_frames(music_tree):
    seen = []

    def frame_embedding(clip, frames):
        seen.append((clip.id, tuple(frames)))
        return np.full(4, clip.label_index, dtype=np.float32)

    data = dataset(
        music_tree, "test", frame_embedding=frame_embedding, mixture_embedding=lambda key: np.zeros(6, np.float32)
    )
    sample = data[0]
    assert FRAMES not in sample and sample[VISUAL_EMB].shape == (2, 4)
    assert torch.equal(sample[VISUAL_EMB][:, 0], sample[LABELS].float())
    assert sample[MIXTURE_EMB].shape == (6,)
    assert len(seen) == 2 and all(len(frames) == 3 for _, frames in seen)
    with pytest.raises(ValueError, match="set fixed_mixtures"):
        dataset(music_tree, mixture_embedding=lambda key: np.zeros(6, np.float32))


def test_non_finite_audio_fails_naming_the_wav(music_tree, tmp_path):
    root = copy_tree(music_tree, tmp_path / "music")
    data = dataset(root, "val")
    recipe = data.recipe(0)
    wav = data.clips[recipe.clips[0]].audio
    index = put_nonfinite(wav, (recipe.starts[0] + 100) / 11025)
    with pytest.raises(DatasetError) as error:
        data[0]
    assert str(error.value) == (
        f"{wav} has non-finite samples (NaN or infinity), the first read at {index / 11025:.2f} s (sample {index}): "
        "losses and metrics would be NaN. Re-create the file (re-run the preparation of this clip) or remove the "
        "clip; `avtoolkit data check` lists every such file."
    )
