import av
import numpy as np
import pytest
import torch
from PIL import Image

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.video import (
    decode_audio_track,
    decode_video,
    read_image,
    read_mask,
    read_rgb_mask,
    resize_mask,
)

SOURCE_FPS = 10
STEP = 12  # brightness step between source frames: frame i is uniformly grey i * STEP


def write_video(path, n_frames=20, audio_rate=22050, audio_seconds=2.0, video=True, audio=True):
    """A tiny video: frame i is uniformly grey ``i * STEP``; the audio a 440 Hz tone on both channels."""
    codec_v, codec_a = ("mpeg4", "aac") if path.suffix == ".mp4" else ("mpeg4", "pcm_s16le")
    with av.open(str(path), "w") as container:
        if video:
            stream = container.add_stream(codec_v, rate=SOURCE_FPS)
            stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        if audio:
            sound = container.add_stream(codec_a, rate=audio_rate)
            sound.layout = "stereo"
        if video:
            for i in range(n_frames):
                image = np.full((24, 32, 3), i * STEP, dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        if audio:
            n = int(audio_seconds * audio_rate)
            tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / audio_rate)).astype(np.float32)
            block = sound.codec_context.frame_size or 1024
            for start in range(0, n, block):
                chunk = tone[start : start + block]
                frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = audio_rate, start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mkv")


def source_index(frame):
    """Which source frame a decoded (lossy) frame is, from its brightness."""
    return round(frame.float().mean().item() / STEP)


# --- images and masks -------------------------------------------------------------------------------------


@pytest.fixture
def rgb(tmp_path):
    return np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)


def test_read_image_png_is_exact_rgb_uint8(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == torch.uint8 and image.shape == (3, 10, 12)
    assert torch.equal(image, torch.from_numpy(rgb).permute(2, 0, 1))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_read_image_converts_grayscale_alpha_and_palette_to_rgb(tmp_path, rgb, mode):
    Image.fromarray(rgb).convert(mode).save(tmp_path / "a.png")
    expected = np.array(Image.open(tmp_path / "a.png").convert("RGB"))
    assert torch.equal(read_image(tmp_path / "a.png"), torch.from_numpy(expected).permute(2, 0, 1))


def test_read_image_jpeg_and_resize(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").shape == (3, 10, 12)
    assert read_image(tmp_path / "a.jpg", 7).shape == (3, 7, 7)
    assert read_image(tmp_path / "a.jpg", (5, 9)).shape == (3, 5, 9)


def test_read_image_resize_is_antialiased(tmp_path):
    stripes = np.zeros((16, 16, 3), dtype=np.uint8)
    stripes[:, ::2] = 255
    Image.fromarray(stripes).save(tmp_path / "s.png")
    small = read_image(tmp_path / "s.png", 4).float()
    assert (small - 127.5).abs().max() < 16  # averaged stripes, not sampled ones (0 or 255)


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"not found.*missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetError, match=r"cannot decode image .*bad.png"):
        read_image(tmp_path / "bad.png")


def test_read_mask_keeps_values_when_resized(tmp_path):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 3:7] = 255
    Image.fromarray(mask, mode="L").save(tmp_path / "m.png")
    assert torch.equal(read_mask(tmp_path / "m.png"), torch.from_numpy(mask))
    for size in (5, 16, (7, 11)):
        resized = read_mask(tmp_path / "m.png", size)
        assert resized.dtype == torch.uint8
        assert set(resized.unique().tolist()) == {0, 255}
    assert torch.equal(read_mask(tmp_path / "m.png", 16)[::2, ::2], torch.from_numpy(mask))


def test_read_mask_palette_png_is_read_as_luminance(tmp_path):
    mask = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png").tolist() == [[0, 255], [255, 0]]


def test_read_mask_refuses_16_bit(tmp_path):
    Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16)).save(tmp_path / "m16.png")
    with pytest.raises(DatasetError, match=r"m16.png.*8-bit"):
        read_mask(tmp_path / "m16.png")


def test_read_rgb_mask_keeps_colours(tmp_path):
    label = np.zeros((6, 6, 3), dtype=np.uint8)
    label[:3] = (128, 0, 0)
    label[3:, 3:] = (0, 128, 128)
    Image.fromarray(label).save(tmp_path / "l.png")
    colours = {tuple(c) for c in read_rgb_mask(tmp_path / "l.png", 13).permute(1, 2, 0).reshape(-1, 3).tolist()}
    assert colours == {(0, 0, 0), (128, 0, 0), (0, 128, 128)}


def test_resize_mask_any_dtype():
    indices = torch.arange(16, dtype=torch.int64).reshape(4, 4) * 100
    assert torch.equal(resize_mask(indices, 8)[::2, ::2], indices)
    assert resize_mask(indices, None) is indices


# --- video ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fps", "expected"),
    [
        (10, list(range(20))),  # same rate: every frame
        (4, [0, 2, 5, 7, 10, 12, 15, 17]),  # frame shown at k/4 s
        (3, [0, 3, 6, 10, 13, 16]),  # non-integer ratio
        (20, [i // 2 for i in range(40)]),  # higher rate: frames repeat
    ],
)
def test_decode_video_samples_the_frame_shown_at_each_time(video, fps, expected):
    frames = list(decode_video(video, fps))
    assert all(f.dtype == torch.uint8 and f.shape == (3, 24, 32) for f in frames)
    assert [source_index(f) for f in frames] == expected


def test_decode_video_resizes(video):
    frames = list(decode_video(video, 5, size=16))
    assert len(frames) == 10 and frames[0].shape == (3, 16, 16)


def test_decode_video_mp4(tmp_path):
    path = write_video(tmp_path / "clip.mp4")
    assert [source_index(f) for f in decode_video(path, 2)] == [0, 5, 10, 15]


def test_decode_video_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"not found.*nothing.mp4"):
        next(decode_video(tmp_path / "nothing.mp4", 8))
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(DatasetError, match=r"junk.mp4"):
        next(decode_video(tmp_path / "junk.mp4", 8))
    sound_only = write_video(tmp_path / "sound.mkv", video=False)
    with pytest.raises(DatasetError, match=r"sound.mkv has no video stream"):
        next(decode_video(sound_only, 8))


def test_decode_audio_track_resamples_to_mono(video):
    audio = decode_audio_track(video, 11025)
    assert audio.dtype == torch.float32 and audio.ndim == 1
    assert abs(audio.numel() - 2 * 11025) <= 64
    spectrum = np.abs(np.fft.rfft(audio.numpy()))
    assert abs(np.argmax(spectrum) * 11025 / audio.numel() - 440) < 2
    assert 0.45 < audio.abs().max() < 0.55  # channels averaged: the tone keeps its amplitude


def test_decode_audio_track_aac(tmp_path):
    audio = decode_audio_track(write_video(tmp_path / "clip.mp4"), 16000)
    assert abs(audio.numel() - 32000) < 2048  # AAC adds encoder padding


def test_decode_audio_track_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"not found.*nothing.mkv"):
        decode_audio_track(tmp_path / "nothing.mkv", 16000)
    silent = write_video(tmp_path / "silent.mkv", audio=False)
    with pytest.raises(DatasetError, match=r"silent.mkv has no audio stream"):
        decode_audio_track(silent, 16000)
