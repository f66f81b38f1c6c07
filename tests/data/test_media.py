"""The predict-only datamodules for your own media: batch keys and shapes, coverage of the input, clear errors."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures.make_media import write_corrupt, write_picture, write_video

from avtoolkit.data.batch import AUDIO, FRAMES, MIXTURE, MIXTURE_EMB, VISUAL_EMB, WAVEFORM, WAVEFORM_LENGTH
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.media import (
    DISPLAY_FRAMES,
    FRAME_INDEX,
    MIXTURE_LENGTH,
    MIXTURE_START,
    MediaSegmentationDataModule,
    MediaSeparationDataModule,
)
from avtoolkit.data.video import decode_audio_track


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3 s 48×64 MP4 with sound, one without, two pictures, a corrupt file, wavs of 2 s and 0.5 s."""
    root = tmp_path_factory.mktemp("media")
    tone = (0.3 * np.sin(2 * np.pi * 330 * np.arange(44100) / 22050)).astype(np.float32)
    sf.write(root / "song.wav", tone, 22050)
    sf.write(root / "blip.wav", tone[:11025], 22050)
    return {
        "video": write_video(root / "clip.mp4"),
        "silent": write_video(root / "silent.mp4", audio=False),
        "guitar": write_picture(root / "guitar.png", (200, 40, 40)),
        "flute": write_picture(root / "flute.jpg", (40, 40, 200)),
        "corrupt": write_corrupt(root / "corrupt.mp4"),
        "song": root / "song.wav",
        "blip": root / "blip.wav",
    }


def batches(datamodule):
    datamodule.setup("predict")
    return [datamodule.on_after_batch_transfer(batch, 0) for batch in datamodule.predict_dataloader()]


def test_segmentation_batches_cover_the_video_like_avsbench_clips(media):
    dm = MediaSegmentationDataModule(media["video"], image_size=32, batch_size=2)
    (batch,) = batches(dm)
    assert batch[FRAMES].shape == (1, 5, 3, 32, 32) and batch[FRAMES].dtype == torch.float32
    assert batch[AUDIO].shape == (1, 5, 1, 96, 64)
    assert batch[DISPLAY_FRAMES].shape == (1, 5, 3, 48, 64) and batch[DISPLAY_FRAMES].dtype == torch.uint8
    assert batch[FRAME_INDEX].tolist() == [[0, 1, 2, -1, -1]]  # 3 s of video: 3 frames, then padding
    assert torch.equal(batch[FRAMES][0, 3], batch[FRAMES][0, 2])  # padding repeats the last frame
    audio = decode_audio_track(media["video"], 16000)
    assert batch[WAVEFORM].shape == (1, 80000) and int(batch[WAVEFORM_LENGTH][0]) == audio.shape[0]
    assert torch.equal(batch[WAVEFORM][0, : audio.shape[0]], audio)
    assert dm.name == "clip"


def test_segmentation_frame_rate_interleaves_passes_one_second_apart(media):
    dm = MediaSegmentationDataModule(media["video"], image_size=32, frames_per_clip=2, frame_rate=2, overlay_height=24)
    found = batches(dm)
    indices = torch.cat([b[FRAME_INDEX] for b in found]).tolist()
    assert indices == [[0, 2], [1, 3], [4, -1], [5, -1]]  # 6 frames at 2 fps; each sample's frames 1 s apart
    assert found[0][DISPLAY_FRAMES].shape[-2:] == (24, 32)  # overlay height, the video's aspect ratio
    second = torch.cat([b[WAVEFORM] for b in found])[1]  # the pass starting at 0.5 s hears audio from 0.5 s
    assert torch.equal(second[:8000], decode_audio_track(media["video"], 16000)[8000:16000])


def test_separation_windows_cover_the_whole_mixture(media):
    dm = MediaSeparationDataModule(
        media["video"], images=[media["guitar"], media["flute"]], window=4095, overlap=0.25, image_size=24
    )
    assert dm.source_names == ["guitar", "flute"]
    found = batches(dm)
    mixture = decode_audio_track(media["video"], 11025)
    starts = torch.cat([b[MIXTURE_START] for b in found])
    lengths = torch.cat([b[MIXTURE_LENGTH] for b in found])
    assert int(starts[-1] + lengths[-1]) == mixture.shape[0] and int(starts[0]) == 0
    assert (starts.diff() == 4095 - 1024).all() and (lengths[:-1] == 4095).all()
    batch = found[-1]
    assert batch[MIXTURE].shape[-1] == 4095 and batch[FRAMES].shape[1:] == (2, 3, 3, 24, 24)
    length = int(batch[MIXTURE_LENGTH][-1])
    assert torch.equal(batch[MIXTURE][-1, :length], mixture[int(batch[MIXTURE_START][-1]) :])
    assert not batch[MIXTURE][-1, length:].any()


def test_separation_from_the_video_alone_and_from_an_audio_file(media):
    dm = MediaSeparationDataModule(media["video"], window=8190, frames_per_source=2, image_size=16)
    assert dm.source_names == ["clip"]
    frames = torch.cat([b[FRAMES] for b in batches(dm)])
    assert frames.shape[1:3] == (1, 2)  # the video's frames are the one source's pictures
    assert not torch.equal(frames[0, 0, 0], frames[-1, 0, -1])  # taken along the video (the square moves)
    dm = MediaSeparationDataModule(audio=media["song"], images=[media["guitar"], media["guitar"]], window=4095)
    assert dm.name == "song" and dm.source_names == ["guitar", "guitar_2"]
    found = batches(dm)
    total = int(found[-1][MIXTURE_START][-1] + found[-1][MIXTURE_LENGTH][-1])
    assert total == 22050  # 2 s at 22.05 kHz resampled to 11025 Hz


def test_unreadable_media_errors_name_the_file_and_the_fix(media, tmp_path):
    """Checked in setup("predict"), before any decoding (and before Lightning loads a checkpoint)."""
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(media["video"].read_bytes()[:2000])  # an interrupted download
    gif = write_picture(tmp_path / "a.gif", (0, 0, 0))
    segment, separate = MediaSegmentationDataModule, MediaSeparationDataModule
    cases = [
        (lambda: segment(tmp_path / "nope.mp4"), ["nope.mp4", "not found", "--data.video"]),
        (lambda: segment(media["corrupt"]), ["corrupt.mp4", "cannot read", "ffmpeg"]),
        (lambda: segment(truncated), ["cut.mp4", "cannot read", "truncated"]),
        (lambda: segment(media["silent"]), ["silent.mp4", "no audio stream", "--data.audio"]),
        (lambda: segment(media["song"]), ["song.wav", "sound file", "--data.audio"]),
        (lambda: segment(media["guitar"]), ["guitar.png", "unsupported video", ".mp4"]),
        (lambda: segment(media["video"], audio=media["blip"]), ["blip.wav", "0.50 s", "too short"]),
        (lambda: separate(audio=media["song"], images=[tmp_path / "cello.png"]), ["cello.png", "--data.images"]),
        (lambda: separate(audio=media["song"], images=[gif]), ["a.gif", "unsupported image", ".png"]),
        (lambda: separate(audio=media["silent"], images=[media["guitar"]]), ["silent.mp4", "no audio stream"]),
        (lambda: separate(audio=media["song"]), ["--data.images", "--data.video"]),
        (lambda: separate(), ["--data.video", "--data.audio"]),
        (lambda: separate(audio=media["blip"], images=[media["guitar"]]), ["blip.wav", "at least 1.00 s"]),
    ]
    for make, expected in cases:
        with pytest.raises(DatasetError) as error:
            batches(make())
        assert all(text in str(error.value) for text in expected), (expected, str(error.value))
    with pytest.raises(DatasetError, match="ground truth"):
        segment(media["video"]).setup("fit")


def test_frozen_encoders_give_the_embeddings_a_cache_would(media):
    """Networks trained on cached CLIP/CLAP embeddings get them computed on the device by the same encoders."""
    mean_colour = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())  # (n, 3, H, W) → (n, 3)
    loudness = torch.nn.Sequential(torch.nn.Unflatten(1, (1, -1)), torch.nn.AdaptiveAvgPool1d(2), torch.nn.Flatten())
    dm = MediaSeparationDataModule(
        media["video"],
        images=[media["guitar"], media["flute"]],
        window=4095,
        frames_per_source=2,
        image_size=16,
        visual_encoder=mean_colour,
        mixture_encoder=loudness,
    )
    batch = batches(dm)[0]
    assert batch[VISUAL_EMB].shape == (4, 2, 3) and batch[MIXTURE_EMB].shape == (4, 2)
    torch.testing.assert_close(batch[VISUAL_EMB], batch[FRAMES].mean(dim=(2, 4, 5)))
    torch.testing.assert_close(batch[MIXTURE_EMB][:, 0], batch[MIXTURE][:, :2048].mean(1), atol=1e-3, rtol=0)
