import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from avtoolkit.data.audio import Spectrogram, VGGishLogMel, read_audio, vggish_mel_matrix
from avtoolkit.data.audio_files import audio_info, nonfinite_samples
from avtoolkit.data.errors import DatasetError


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "clip.wav"
    samples = np.arange(1000, dtype=np.float32) / 1000.0
    sf.write(path, np.stack([samples, -samples], axis=1), 8000, subtype="FLOAT")
    return path


def test_read_audio_seeks_the_window_and_averages_channels(wav):
    window = read_audio(wav, 8000, start=100, n_samples=50)
    assert window.shape == (50,) and window.dtype == torch.float32
    assert torch.allclose(window, torch.zeros(50))  # the two channels cancel
    assert audio_info(wav) == (8000, 1000)


def test_read_audio_mono_values(tmp_path):
    path = tmp_path / "mono.wav"
    samples = (np.arange(800, dtype=np.float32) - 400) / 400
    sf.write(path, samples, 8000, subtype="FLOAT")
    assert torch.equal(read_audio(path, 8000, 10, 5), torch.from_numpy(samples[10:15]))
    padded = read_audio(path, 8000, 790, 20, pad=True)
    assert torch.equal(padded[:10], torch.from_numpy(samples[790:])) and torch.all(padded[10:] == 0)


def test_read_audio_errors_name_the_file(tmp_path, wav):
    with pytest.raises(DatasetError, match=r"not found.*missing\.wav"):
        read_audio(tmp_path / "missing.wav", 8000)
    with pytest.raises(DatasetError, match=r"clip\.wav has sample rate 8000 Hz but 16000"):
        read_audio(wav, 16000)
    with pytest.raises(DatasetError, match="shorter than the requested window"):
        read_audio(wav, 8000, start=900, n_samples=200)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(DatasetError, match=r"corrupt\.wav"):
        read_audio(corrupt, 8000)


def test_stft_istft_round_trip_and_shapes():
    spec = Spectrogram(n_fft=1022, hop_length=256, warp_bins=256)
    wave = torch.randn(2, 3, 65535)
    stft = spec.stft(wave)
    assert stft.shape == (2, 3, 512, 256) and spec.n_frames(65535) == 256
    back = spec.istft(stft.abs(), stft.angle(), 65535)
    assert torch.allclose(back, wave, atol=1e-4)


def test_log_frequency_warp_is_monotone_and_invertible_on_smooth_input():
    spec = Spectrogram(n_fft=1022, hop_length=256, warp_bins=256)
    ramp = torch.linspace(0, 1, 512)[:, None].expand(512, 8).contiguous()
    warped = spec.warp(ramp)
    assert warped.shape == (256, 8)
    column = warped[:, 0]
    assert torch.all(column[1:] >= column[:-1])  # monotone in frequency
    # log spacing: the lower half of the warped rows covers far less than half of the linear band
    assert column[128] < 0.3
    assert torch.allclose(spec.unwarp(warped), ramp, atol=1e-3)
    assert torch.allclose(warped[0], ramp[0]) and torch.allclose(warped[-1], ramp[-1])


def test_no_warp_is_identity():
    spec = Spectrogram(n_fft=510, hop_length=128, warp_bins=None)
    x = torch.rand(3, 256, 10)
    assert spec.warp(x) is x and spec.unwarp(x) is x


def test_vggish_mel_matrix_properties():
    mel = vggish_mel_matrix()
    assert mel.shape == (257, 64)
    assert torch.all(mel[0] == 0)  # DC bin zeroed
    assert torch.all(mel >= 0) and mel.max() <= 1.0
    peaks = mel.argmax(dim=0)
    assert torch.all(peaks[1:] >= peaks[:-1])  # band centres increase
    hz_per_bin = 8000 / 256
    assert 125 <= peaks[0] * hz_per_bin <= 200 and 7000 <= peaks[-1] * hz_per_bin <= 7500


def test_vggish_log_mel_examples_and_padding():
    t = torch.arange(5 * 16000) / 16000
    tone = torch.sin(2 * math.pi * 1000 * t)[None]
    features = VGGishLogMel(5)(tone)
    assert features.shape == (1, 5, 1, 96, 64)
    mel_peak = features[0, 0, 0].mean(0).argmax()
    hz = torch.linspace(0, 8000, 257)
    assert abs(float(hz[vggish_mel_matrix()[:, mel_peak].argmax()]) - 1000) < 60
    assert torch.allclose(features[0, 0, 0].min(), torch.tensor(math.log(0.01)), atol=0.5)
    # 3 s of audio for 5 frames: repeat the last example, or zero-pad
    short = tone[:, : 3 * 16000]
    repeated = VGGishLogMel(5, pad="repeat")(short)
    assert torch.equal(repeated[:, 3], repeated[:, 2]) and torch.equal(repeated[:, 4], repeated[:, 2])
    zeroed = VGGishLogMel(5, pad="zero")(short)
    assert torch.all(zeroed[:, 3:] == 0) and torch.equal(zeroed[:, :3], repeated[:, :3])


def test_vggish_log_mel_fills_windows_past_the_real_length():
    t = torch.arange(5 * 16000) / 16000
    tone = torch.sin(2 * math.pi * 440 * t)
    padded = torch.stack([tone, torch.cat([tone[: 3 * 16000], torch.zeros(2 * 16000)])])
    lengths = torch.tensor([5 * 16000, 3 * 16000])
    repeated = VGGishLogMel(5, pad="repeat")(padded, lengths)
    assert torch.equal(repeated[0], VGGishLogMel(5)(tone[None])[0])
    assert torch.equal(repeated[1, 3], repeated[1, 2]) and torch.equal(repeated[1, 4], repeated[1, 2])
    assert torch.equal(repeated[1, :3], repeated[0, :3])
    zeroed = VGGishLogMel(5, pad="zero")(padded, lengths)
    assert torch.all(zeroed[1, 3:] == 0) and torch.equal(zeroed[1, :3], repeated[1, :3])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_read_audio_refuses_non_finite_samples_naming_the_file(tmp_path, value):
    path = tmp_path / "broken.wav"
    samples = np.full((800, 2), 0.25, dtype=np.float32)
    samples[300, 1] = value  # one channel of one sample
    sf.write(path, samples, 8000, subtype="FLOAT")
    message = (
        f"{path} has non-finite samples (NaN or infinity), the first read at 0.04 s (sample 300): losses and metrics "
        "would be NaN. Re-create the file (re-run the preparation of this clip) or remove the clip; `avtoolkit data "
        "check` lists every such file."
    )
    with pytest.raises(DatasetError) as error:
        read_audio(path, 8000, 100, 400)
    assert str(error.value) == message
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_audio(path, 8000, 0, 1000, pad=True)
    # only the samples read are checked: windows that leave the sample out read as usual
    assert torch.equal(read_audio(path, 8000, 0, 300), torch.full((300,), 0.25))
    assert torch.equal(read_audio(path, 8000, 301), torch.full((499,), 0.25))


def test_nonfinite_samples_counts_and_skips_integer_encodings(tmp_path):
    path = tmp_path / "float.wav"
    samples = np.zeros(5000, dtype=np.float32)
    samples[[1200, 4999]] = np.nan
    sf.write(path, samples, 8000, subtype="FLOAT")
    assert nonfinite_samples(path, block=1000) == (2, 1200)
    pcm = tmp_path / "pcm.wav"
    sf.write(pcm, np.zeros(5000, dtype=np.float32), 8000, subtype="PCM_16")
    assert nonfinite_samples(pcm) == (0, None)
    with pytest.raises(DatasetError, match=r"not found: .*missing\.wav"):
        nonfinite_samples(tmp_path / "missing.wav")
