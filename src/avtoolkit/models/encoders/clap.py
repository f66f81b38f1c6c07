"""Frozen CLAP audio encoder (laion-clap HTSAT-tiny audio branch + audio projection), local weights or random init.

HFRA aligns its bottleneck with the CLAP embedding of the mixture. Only CLAP's audio side is
built, with laion-clap's own modules and parameter names, so the ``audio_branch.*`` and ``audio_projection.*``
tensors of an official checkpoint (e.g. ``630k-audioset-best.pt``, the non-fusion HTSAT-tiny model) load as
they are; the text branch (RoBERTa, fetched from the Hugging Face hub by laion-clap) is never built.

Input convention, as laion-clap's ``CLAP_Module.get_audio_embedding_from_data`` for the non-fusion model:

1. resample to 48 kHz (``torchaudio.functional.resample``, on the input's device);
2. quantise to 16 bits and back (clip to [−1, 1], ``int16(x · 32767) / 32767``), as laion-clap does;
3. fit to 10 s (480 000 samples): a shorter clip is repeated a whole number of times, ``floor(480000 / L)``,
   then zero-padded ("repeatpad"); a longer one keeps its first 10 s (laion-clap crops at random, which a
   cache cannot reproduce).

Cost: HTSAT always sees a full 10-s clip at 48 kHz, whatever the input length, so a clip costs the same
however short it is: about 150 ms per clip on 2 CPU cores (batch of 8 six-second mixtures at 11025 Hz; the
resampling and padding take about 1 ms of it). Building the model takes 1 to 4 s, importing laion-clap several
seconds (it imports transformers), hashing the weights for :meth:`CLAPAudioEncoder.identity` 0.1 s.
"""

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from avtoolkit.models.encoders.clip import FrozenEncoder, load_matching, read_state_dict, seeded_cpu_init
from avtoolkit.utils.imports import lazy_import

CLAP_SAMPLE_RATE = 48000
"""Rate of CLAP's audio input (Hz)."""
CLAP_CLIP_SAMPLES = 480000
"""Samples CLAP sees per clip: 10 s at 48 kHz."""

_HTSAT_TINY = {  # laion_clap/clap_module/model_configs/HTSAT-tiny.json, "audio_cfg"
    "audio_length": 1024,
    "clip_samples": CLAP_CLIP_SAMPLES,
    "mel_bins": 64,
    "sample_rate": CLAP_SAMPLE_RATE,
    "window_size": 1024,
    "hop_size": 480,
    "fmin": 50,
    "fmax": 14000,
    "class_num": 527,
    "model_type": "HTSAT",
    "model_name": "tiny",
}
_HTSAT_WIDTH = 768  # HTSAT-tiny's embedding size (CLAP's ``embed_dim``)
_JOINT_DIM = 512  # CLAP's ``joint_embed_shape``


def quantize_int16(waveform: Tensor) -> Tensor:
    """Clip to [−1, 1] and round-trip through 16-bit integers (truncating), as laion-clap does before embedding."""
    return (waveform.clamp(-1.0, 1.0) * 32767.0).to(torch.int16).to(waveform.dtype) / 32767.0


def repeat_pad(waveform: Tensor, length: int = CLAP_CLIP_SAMPLES) -> Tensor:
    """Fit ``(B, L)`` waveforms to ``length`` samples: laion-clap's "repeatpad", or the first ``length`` samples.

    A shorter clip is repeated ``floor(length / L)`` times and then zero-padded to ``length``; a longer one is cut.
    """
    n = waveform.shape[-1]
    if n >= length:
        return waveform[..., :length]
    repeated = waveform.repeat(1, length // n)
    return F.pad(repeated, (0, length - repeated.shape[-1]))


class CLAPAudioEncoder(FrozenEncoder):
    """Frozen CLAP audio encoder: mono waveforms → L2-normalised 512-d CLAP audio embeddings.

    Weights are a local file: an official laion-clap checkpoint of the non-fusion HTSAT-tiny model (its
    ``audio_branch.*`` and ``audio_projection.*`` tensors are used; ``module.`` prefixes and a
    ``{"state_dict": ...}`` wrapper are handled) or this encoder's own ``state_dict()``. Fusion checkpoints
    (``*fusion*.pt``) do not fit: their audio branch has extra layers.

    Args:
        weights: Local checkpoint file; ``None`` for a random initialisation (with a warning).
        sample_rate: Rate of the waveforms given to :meth:`forward` (Hz); resampled to 48 kHz inside.
        seed: Seed of the random initialisation (used when ``weights`` is ``None``): the same seed gives
            bit-identical weights in any process.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: ``weights`` does not fit HTSAT-tiny + projection.
    """

    def __init__(self, weights: str | None = None, sample_rate: int = 11025, seed: int = 0) -> None:
        super().__init__(weights, seed)
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"CLAP weights not found: {weights}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*timm.models.layers.*", category=FutureWarning)
            htsat = lazy_import("laion_clap.clap_module.htsat", "clap")
            clap_model = lazy_import("laion_clap.clap_module.model", "clap")
        with seeded_cpu_init(seed), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.meshgrid.*")  # inside laion-clap's Swin blocks
            self.audio_branch = htsat.create_htsat_model(clap_model.CLAPAudioCfp(**_HTSAT_TINY))
            self.audio_projection = nn.Sequential(  # CLAP.audio_projection with mlp_act="relu"
                nn.Linear(_HTSAT_WIDTH, _JOINT_DIM), nn.ReLU(), nn.Linear(_JOINT_DIM, _JOINT_DIM)
            )
        self.sample_rate = sample_rate
        if weights is None:
            self.warn_random("CLAPAudioEncoder")
        else:
            state = read_state_dict(weights)
            audio = {k: v for k, v in state.items() if k.startswith(("audio_branch.", "audio_projection."))}
            # Without any audio_* key the file is something else: show its keys in the error.
            load_matching(self, audio or state, weights, "laion-clap HTSAT-tiny audio branch + audio projection")
        self.freeze()

    @property
    def embedding_dim(self) -> int:
        """Size D of the embeddings (512)."""
        return _JOINT_DIM

    def identity(self) -> str:
        """Model, weights and input convention, e.g. ``laion_clap:HTSAT-tiny|random-seed0:1a2b...|pre:...``."""
        preprocess = (
            f"{self.sample_rate}Hz-torchaudio-sinc-to-{CLAP_SAMPLE_RATE}Hz,int16,repeatpad-or-first-"
            f"{CLAP_CLIP_SAMPLES},l2"
        )
        return f"laion_clap:HTSAT-tiny|{self.weights_tag()}|pre:{preprocess}"

    def prepare(self, waveform: Tensor) -> Tensor:
        """``(B, L)`` waveforms at ``sample_rate`` → ``(B, 480000)`` CLAP input (48 kHz, quantised, 10 s)."""
        x = waveform.float()
        if self.sample_rate != CLAP_SAMPLE_RATE:
            x = torchaudio.functional.resample(x, self.sample_rate, CLAP_SAMPLE_RATE)
        return repeat_pad(quantize_int16(x))

    @torch.no_grad()
    def forward(self, waveform: Tensor) -> Tensor:
        """Embed mono waveforms.

        Args:
            waveform: ``(B, L)`` at ``sample_rate``, values in [−1, 1] (clipped beyond), any ``L`` ≥ 1.

        Returns:
            L2-normalised embeddings ``(B, 512)``, float32.
        """
        if waveform.ndim != 2 or waveform.shape[-1] == 0:
            raise ValueError(f"waveform must be (B, L) with L > 0, got shape {tuple(waveform.shape)}")
        x = self.prepare(waveform).to(next(self.audio_projection.parameters()).dtype)
        embedding = self.audio_branch({"waveform": x}, device=x.device)["embedding"]
        return F.normalize(self.audio_projection(embedding).float(), dim=-1)
