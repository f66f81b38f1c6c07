"""CLAPAudioEncoder: frozen, laion-clap's input convention, deterministic random init, official checkpoint keys."""

import warnings
from pathlib import Path

import pytest
import torch
import torchaudio
from torch import nn

from avtoolkit.models.encoders.clap import CLAP_CLIP_SAMPLES, CLAPAudioEncoder, quantize_int16, repeat_pad

RATE = 11025


def build(weights: str | Path | None = None, seed: int = 0) -> CLAPAudioEncoder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights notice
        return CLAPAudioEncoder(None if weights is None else str(weights), RATE, seed)


@pytest.fixture(scope="module")
def encoder() -> CLAPAudioEncoder:
    with pytest.warns(UserWarning, match="random weights .* random features"):
        return CLAPAudioEncoder(sample_rate=RATE)


@pytest.fixture(scope="module")
def waveforms() -> torch.Tensor:
    t = torch.arange(RATE // 2) / RATE  # 0.5 s: repeated 20 times by repeatpad
    return torch.stack([0.3 * torch.sin(2 * torch.pi * 440 * t), 0.2 * torch.randn(t.numel())])


def test_frozen_shapes_and_unit_norm(encoder: CLAPAudioEncoder, waveforms: torch.Tensor):
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = nn.ModuleDict({"clap": encoder, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training and not any(module.training for module in encoder.modules())
    out = encoder(waveforms.clone().requires_grad_(True))
    assert out.shape == (2, 512) and out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    assert encoder.embedding_dim == 512
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        encoder(waveforms[0])


def test_padding_matches_laion_clap():
    from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

    audio_cfg = {"hop_size": 480, "mel_bins": 64, "sample_rate": 48000, "window_size": 1024, "fmin": 50, "fmax": 14000}
    for length in (1, 7, 150_000, 285_330, 479_999, 480_000):  # 285330: a 65535-sample window at 11025 Hz
        wave = torch.empty(length).uniform_(-1.2, 1.2, generator=torch.Generator().manual_seed(length))
        reference = torch.from_numpy(int16_to_float32(float32_to_int16(wave.numpy())))  # CLAP_Module's quantisation
        sample = get_audio_features(
            {},
            reference,
            CLAP_CLIP_SAMPLES,
            data_truncating="rand_trunc",
            data_filling="repeatpad",
            audio_cfg=audio_cfg,
        )
        assert torch.equal(repeat_pad(quantize_int16(wave)[None])[0], sample["waveform"]), length


def test_longer_clips_keep_their_first_10_seconds():
    wave = torch.randn(2, CLAP_CLIP_SAMPLES + 1000)
    assert torch.equal(repeat_pad(wave), wave[:, :CLAP_CLIP_SAMPLES])


def test_prepare_resamples_to_48khz_then_repeat_pads(encoder: CLAPAudioEncoder, waveforms: torch.Tensor):
    prepared = encoder.prepare(waveforms)
    assert prepared.shape == (2, CLAP_CLIP_SAMPLES)
    at_48k = quantize_int16(torchaudio.functional.resample(waveforms, RATE, 48000))
    assert at_48k.shape[-1] == 23998  # ceil(5512 × 48000 / 11025)
    n = CLAP_CLIP_SAMPLES // at_48k.shape[-1]
    torch.testing.assert_close(prepared[:, : n * at_48k.shape[-1]], at_48k.repeat(1, n))
    assert prepared[:, n * at_48k.shape[-1] :].abs().sum() == 0


def test_random_init_is_deterministic_per_seed(encoder: CLAPAudioEncoder):
    assert build(seed=0).identity() == encoder.identity()  # the identity holds a digest of all weights
    other = build(seed=1)
    assert other.identity() != encoder.identity()
    assert other.identity().startswith("laion_clap:HTSAT-tiny|random-seed1:")


def test_official_checkpoint_layout_round_trip(encoder: CLAPAudioEncoder, waveforms: torch.Tensor, tmp_path: Path):
    official = {  # laion-clap's training checkpoints: DataParallel prefix, text branch, logit scales, wrapped
        "epoch": 45,
        "name": "630k-audioset",
        "state_dict": {
            f"module.{key}": value
            for key, value in {
                **encoder.state_dict(),
                "text_branch.embeddings.word_embeddings.weight": torch.zeros(4, 2),
                "text_projection.0.weight": torch.zeros(2, 2),
                "logit_scale_a": torch.ones(()),
            }.items()
        },
    }
    torch.save(official, tmp_path / "630k-audioset-best.pt")
    loaded = build(tmp_path / "630k-audioset-best.pt", seed=5)
    assert torch.equal(loaded(waveforms), encoder(waveforms))
    assert loaded.identity().split("|")[1] == "weights:" + encoder.weights_digest()[:16]


def test_identity_changes_with_the_weights(encoder: CLAPAudioEncoder, waveforms: torch.Tensor, tmp_path: Path):
    state = {key: value.clone() for key, value in encoder.state_dict().items()}
    state["audio_projection.2.bias"] += 0.1
    torch.save(state, tmp_path / "changed.pt")
    changed = build(tmp_path / "changed.pt")
    assert changed.identity() != encoder.identity()
    assert not torch.allclose(changed(waveforms), encoder(waveforms))


def test_mismatched_checkpoint_names_file_model_and_keys(encoder: CLAPAudioEncoder, tmp_path: Path):
    state = dict(encoder.state_dict())
    del state["audio_projection.2.bias"]
    state["audio_projection.0.weight"] = torch.zeros(512, 1024)  # e.g. a PANN (Cnn14) checkpoint's width
    path = tmp_path / "cnn14.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        build(path)
    message = str(error.value)
    for expected in (str(path), "HTSAT-tiny", "audio_projection.2.bias", "file (512, 1024) vs model (512, 768)"):
        assert expected in message


def test_missing_file_fails_before_building(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"absent\.pt"):
        CLAPAudioEncoder(str(tmp_path / "absent.pt"))
