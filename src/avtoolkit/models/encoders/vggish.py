"""VGGish audio encoder: one 0.96 s log-mel example → a 512 × 6 × 4 feature map and a 128-d embedding.

The network of Google's VGGish (AudioSet), laid out so that the state dict of the widely used PyTorch port loads
as it is. For a log-mel example ``x ∈ R^{1×96×64}`` (96 frames of 10 ms × 64 mel bands, the output of
:class:`avtoolkit.data.audio.VGGishLogMel`):

    F = features(x)        conv3×3 64 → pool → conv 128 → pool → conv 256, conv 256 → pool → conv 512, conv 512
                           → pool (ReLU after every conv, 2×2 max-pools): F ∈ R^{512×6×4} (time × frequency)
    e = embeddings(vec(Fᵀ)) Linear(6·4·512, 4096) → ReLU → Linear(4096, 4096) → ReLU → Linear(4096, 128) → ReLU

where ``vec(Fᵀ)`` flattens ``F`` in TensorFlow's channels-last order (time, frequency, channel), as the port does,
so the first Linear's weights keep the meaning they had in the TensorFlow model. The port's PCA post-processing
(``pproc.*``: whitening and 8-bit quantisation of ``e``) is not part of this module; its keys are ignored when
loading.

``width`` < 1 scales every convolution's channels (and so the first Linear's input) for cheap CPU variants; the
official weights need ``width = 1``, narrower ones load state dicts saved at their width
(:func:`avtoolkit.pretraining.pretrain_vggish`). Weights are a local file (no download): pass ``weights=PATH`` to a
``torch.save``'d state dict of the port (e.g. ``vggish-10086976.pth``).
"""

import warnings
from pathlib import Path
from typing import Self

from torch import Tensor, nn

from avtoolkit.errors import ConfigError, UserError
from avtoolkit.models.encoders.clip import load_matching, read_state_dict

_CONV_PLAN: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")  # "M": 2×2 max-pool
_INPUT_FRAMES = 96  # 0.96 s of 10 ms frames
_INPUT_BANDS = 64  # mel bands
_GRID = (_INPUT_FRAMES // 16, _INPUT_BANDS // 16)  # (6, 4): four 2×2 pools
_HIDDEN = 4096
_EMBEDDING_DIM = 128
_POSTPROCESSING_PREFIXES = ("pproc.", "pca_")  # the port's PCA parameters (pproc._pca_matrix, pca_means, ...)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class VGGish(nn.Module):
    """VGGish: a log-mel example → (last conv block's feature map, 128-d embedding).

    Module and parameter names follow the PyTorch port (``features.0`` … ``features.13`` for the six
    convolutions, ``embeddings.0/2/4`` for the three Linears), so its state dict loads without renaming.

    Args:
        weights: Local state-dict file of the PyTorch port (read with ``torch.load(map_location="cpu",
            weights_only=True)``; ``module.`` prefixes and a ``{"state_dict": ...}`` wrapper are handled, the
            ``pproc.*`` PCA keys ignored). ``None``: random initialisation.
        width: Channel multiplier of the convolutions, in ``(0, 1]`` for cheaper variants (``0.125``: 8, 16, 32,
            64 channels); the embedding MLP keeps its 4096-wide hidden layers. ``weights`` must have been saved
            at the same width (the official ones: 1).
        freeze: Turn off gradients and keep the module in eval mode (``train()`` cannot undo it). Without ``weights``
            that keeps random features: a warning says so.
        with_embedding: Build the embedding MLP (17M parameters at any width). Networks that read only the feature
            map (:meth:`feature_map`) leave it out; loading ``weights`` then skips its ``embeddings.*`` tensors.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: ``width`` is not in ``(0, 1]``.
        ConfigError: the file cannot be read, or its tensors do not fit, e.g. saved at another width (the message
            names the file and the missing, unexpected or mis-shaped keys).

    Warns:
        UserWarning: ``freeze`` without ``weights``: a frozen encoder with random weights never learns anything.
    """

    def __init__(
        self, weights: str | None = None, width: float = 1.0, freeze: bool = False, with_embedding: bool = True
    ) -> None:
        super().__init__()
        if not 0.0 < width <= 1.0:
            raise ValueError(f"VGGish width must be in (0, 1], got {width}")
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"VGGish weights not found: {weights}")
        self.width = width
        self.frozen = freeze
        layers: list[nn.Module] = []
        channels = 1
        for step in _CONV_PLAN:
            if step == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out_channels = _scaled(int(step), width)
                layers += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = out_channels
        self.features = nn.Sequential(*layers)  # F = features(x): convs at indices 0, 3, 6, 8, 11, 13
        self._feature_channels = channels
        self.embeddings = (
            nn.Sequential(  # e = embeddings(vec(Fᵀ))
                nn.Linear(channels * _GRID[0] * _GRID[1], _HIDDEN),
                nn.ReLU(inplace=True),
                nn.Linear(_HIDDEN, _HIDDEN),
                nn.ReLU(inplace=True),
                nn.Linear(_HIDDEN, _EMBEDDING_DIM),
                nn.ReLU(inplace=True),
            )
            if with_embedding
            else None
        )
        if weights is not None:
            skipped = _POSTPROCESSING_PREFIXES if with_embedding else (*_POSTPROCESSING_PREFIXES, "embeddings.")
            try:
                state = read_state_dict(weights)
                state = {key: value for key, value in state.items() if not key.startswith(skipped)}
                load_matching(self, state, weights, "VGGish (PyTorch port: features.*, embeddings.*)")
            except UserError:
                raise
            except ValueError as err:  # unreadable, or keys/shapes that do not fit: the message names both
                raise ConfigError(str(err)) from err
        elif freeze:
            warnings.warn(
                "VGGish is frozen (freeze=True) but has random weights: its features stay random. Pass "
                "weights=<local state dict of the PyTorch port> (a model's audio_weights; `avtoolkit pretrain vggish` "
                "writes one) for pretrained features, or set freeze=False (freeze_audio) to train it.",
                stacklevel=2,
            )
        if freeze:
            self.requires_grad_(False)
            super().train(False)

    @property
    def feature_channels(self) -> int:
        """Channels of the feature map (``512 · width``, rounded)."""
        return self._feature_channels

    @property
    def embedding_dim(self) -> int:
        """Size of the embedding (128)."""
        return _EMBEDDING_DIM

    def train(self, mode: bool = True) -> Self:
        """Set the training mode; a frozen VGGish stays in eval mode whatever ``mode`` is."""
        return super().train(False if self.frozen else mode)

    def feature_map(self, log_mel: Tensor) -> Tensor:
        """The last conv block's output ``(N, feature_channels, 6, 4)`` of ``(N, 1, 96, 64)`` log-mel examples."""
        if log_mel.dim() != 4 or tuple(log_mel.shape[1:]) != (1, _INPUT_FRAMES, _INPUT_BANDS):
            raise ValueError(
                f"VGGish expects log-mel examples (N, 1, {_INPUT_FRAMES}, {_INPUT_BANDS}), got "
                f"{tuple(log_mel.shape)}; flatten (B, T, 1, 96, 64) batches to (B·T, 1, 96, 64) first"
            )
        return self.features(log_mel)

    def forward(self, log_mel: Tensor) -> tuple[Tensor, Tensor]:
        """Encode log-mel examples.

        Args:
            log_mel: ``(N, 1, 96, 64)`` log-mel examples (time × mel band), one 0.96 s window each.

        Returns:
            ``(feature_map, embedding)``: ``(N, feature_channels, 6, 4)`` the last conv block's output (time ×
            frequency, after its pool) and ``(N, 128)`` the embedding (non-negative: it ends with a ReLU).
        """
        if self.embeddings is None:
            raise ValueError("this VGGish was built with with_embedding=False: use feature_map(), or build it with it")
        feature_map = self.feature_map(log_mel)  # (N, C, 6, 4)
        channels_last = feature_map.permute(0, 2, 3, 1).flatten(1)  # vec(Fᵀ): TensorFlow's (6, 4, C) order
        return feature_map, self.embeddings(channels_last)
