"""Frozen CLIP image encoder (open_clip visual tower), from a local checkpoint or a seeded random initialisation.

Also the machinery every frozen embedding encoder shares (:class:`FrozenEncoder`, :func:`read_state_dict`,
:func:`load_matching`): frozen parameters, eval mode that ``train()`` cannot undo, checkpoints read from local
files only, and an :meth:`~FrozenEncoder.identity` string that keys on-disk embedding caches.

Cost on 2 CPU cores (batches of 32 frames; the weights do not change it): ViT-B-32 (88 M parameters, 350 MB)
builds in 1 to 3 s and embeds a 224×224 frame in 60 to 130 ms (the lower figure on idle cores); ViT-S-32 builds
in 0.2 s and takes about 18 ms a frame. Resizing other frame sizes adds little. Hashing the weights for
:meth:`~FrozenEncoder.identity` takes 0.1 to 0.5 s per call.
"""

import pickle
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from avtoolkit.utils.digest import state_digest
from avtoolkit.utils.imports import lazy_import

_SHOWN_MISMATCHES = 5  # keys named per kind of mismatch in the error message


@contextmanager
def seeded_cpu_init(seed: int) -> Iterator[None]:
    """Build modules on the CPU from torch's generator seeded with ``seed``, leaving the global RNG untouched.

    Torch's CPU generator gives the same numbers for the same seed in any process and with any thread count,
    so a module built inside this context has bit-identical weights everywhere.
    """
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        yield


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``; OpenAI's CLIP files are)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a local checkpoint file.

    Reads plain state dicts (``torch.save``), training checkpoints that wrap them in ``{"state_dict": ...}``
    (a DataParallel ``module.`` prefix on every key is removed), ``.safetensors`` files and TorchScript archives
    (OpenAI's original CLIP files). Pickles are read with ``weights_only=True``: no code in the file runs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be read as a checkpoint, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        elif is_torchscript(path):
            loaded = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"cannot read {path} as a checkpoint ({type(err).__name__}: {err}). Expected a state dict saved with "
            "torch.save, a training checkpoint {'state_dict': ...}, a .safetensors file or a TorchScript archive. "
            "If the file pickles other objects, load it yourself (only if you trust it) and torch.save its state dict."
        ) from err
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    state = {k: v for k, v in loaded.items() if isinstance(v, Tensor)} if isinstance(loaded, Mapping) else {}
    if not state:
        raise ValueError(f"{path} holds no tensors; expected a model state dict.")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def load_matching(module: nn.Module, state: Mapping[str, Tensor], path: str | Path, architecture: str) -> None:
    """Load ``state`` into ``module`` when its keys and shapes match exactly, else explain what differs.

    Args:
        module: The module to load into.
        state: The tensors, named as in ``module.state_dict()``.
        path: The file they come from (for the message).
        architecture: What ``module`` is (for the message), e.g. ``"open_clip 'ViT-B-32' visual tower"``.

    Raises:
        ValueError: keys are missing or unexpected, or shapes differ; the message names the file, the
            architecture and the first mismatches of each kind.
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = [
        f"{len(found)} {kind} (first: {', '.join(found[:_SHOWN_MISMATCHES])})"
        for kind, found in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if found
    ]
    if problems:
        raise ValueError(
            f"weights {path} do not fit the {architecture}: {'; '.join(problems)}. Check that the file is a "
            "checkpoint of this architecture."
        )
    module.load_state_dict(state, strict=True)


class FrozenEncoder(nn.Module):
    """Base of the frozen embedding encoders: no gradients, always in eval mode, and a cache identity.

    Subclasses build their networks, call :meth:`freeze`, and describe their preprocessing in :meth:`identity`
    (with :meth:`weights_tag` for the weights).
    """

    def __init__(self, weights: str | Path | None, seed: int) -> None:
        super().__init__()
        self.weights = None if weights is None else str(weights)
        self.seed = seed

    def freeze(self) -> None:
        """Turn off gradients and switch to eval mode (for good: :meth:`train` keeps it)."""
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Self:
        """Stay in eval mode whatever ``mode`` is (Lightning calls ``train()`` on every submodule)."""
        return super().train(False)

    def weights_digest(self) -> str:
        """SHA-256 of the current weights and buffers (names, dtypes, shapes and bytes).

        Computed on each call (about 0.5 s for ViT-B-32 on a CPU), so it always describes the weights in use.
        """
        return state_digest(self)

    def weights_tag(self) -> str:
        """``random-seed{seed}:{digest}`` or ``weights:{digest}`` (first 16 hex digits of :meth:`weights_digest`).

        The digest covers the weights actually loaded, so the same weights saved in another format or place
        give the same tag, and a library change that alters the random initialisation gives another.
        """
        digest = self.weights_digest()[:16]
        return f"random-seed{self.seed}:{digest}" if self.weights is None else f"weights:{digest}"

    def identity(self) -> str:
        """A stable string naming the model, its weights and its preprocessing (the embedding cache key)."""
        raise NotImplementedError

    def warn_random(self, what: str) -> None:
        """Say once, at construction, that the embeddings of a randomly initialised encoder are random features."""
        warnings.warn(
            f"{what} has random weights (seed {self.seed}): its embeddings are random features. Pass weights=<local "
            "checkpoint> for the pretrained model.",
            stacklevel=3,
        )


class CLIPImageEncoder(FrozenEncoder):
    """Frozen CLIP image encoder: frames in [0, 1] → L2-normalised image embeddings.

    Only the visual tower of the open_clip architecture is built (no text tower, nothing downloaded). Frames are
    preprocessed on their device as open_clip does for its models: the shorter side resized to the input size
    (bicubic, antialiased), a centre crop, then CLIP's mean/std normalisation.

    Weights are a local file: open_clip's own checkpoints (the full CLIP state dict; its ``visual.*`` tensors are
    used), a state dict of the visual tower alone, ``.safetensors``, or OpenAI's TorchScript ``ViT-B-32.pt``.
    OpenAI's weights were trained with QuickGELU: use them with ``model_name="ViT-B-32-quickgelu"`` (the shapes
    are the same, so a plain ``ViT-B-32`` would load them silently and give wrong embeddings); LAION's open_clip
    weights use ``ViT-B-32``.

    Args:
        model_name: A built-in open_clip architecture (``open_clip.list_models()``), e.g. ``ViT-B-32`` (512-d,
            the separation papers' choice) or ``ViT-S-32`` (384-d, four times cheaper: tests).
        weights: Local checkpoint file; ``None`` for a random initialisation (with a warning).
        seed: Seed of the random initialisation (used when ``weights`` is ``None``): the same seed gives
            bit-identical weights in any process.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: ``model_name`` is not a local open_clip architecture, or ``weights`` does not fit it.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, model_name: str = "ViT-B-32", weights: str | None = None, seed: int = 0) -> None:
        super().__init__(weights, seed)
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"CLIP weights not found: {weights}")
        open_clip = lazy_import("open_clip", "clip")
        config = None if model_name.startswith("hf-hub:") else open_clip.get_model_config(model_name)
        if config is None:
            raise ValueError(
                f"unknown open_clip architecture {model_name!r}: use a built-in name (open_clip.list_models(), e.g. "
                "'ViT-B-32') or 'local-dir:<folder with open_clip_config.json>'; nothing is downloaded."
            )
        with seeded_cpu_init(seed):
            self.visual = open_clip.model._build_vision_tower(
                config["embed_dim"], config["vision_cfg"], quick_gelu=config.get("quick_gelu", False)
            )
        self.model_name = model_name
        self._embedding_dim = int(config["embed_dim"])
        size = self.visual.image_size
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD  # open_clip's default for CLIP
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if weights is None:
            self.warn_random(f"CLIPImageEncoder({model_name!r})")
        else:
            self._load(Path(weights), quick_gelu=bool(config.get("quick_gelu", False)))
        self.freeze()

    def _load(self, path: Path, quick_gelu: bool) -> None:
        state = read_state_dict(path)
        if any(key.startswith("visual.") for key in state):  # a whole CLIP model: keep the visual tower
            state = {key.removeprefix("visual."): value for key, value in state.items() if key.startswith("visual.")}
        load_matching(self.visual, state, path, f"open_clip {self.model_name!r} visual tower")
        if not quick_gelu and is_torchscript(path):
            warnings.warn(
                f"{path} is a TorchScript archive like OpenAI's CLIP files, whose weights expect QuickGELU; use "
                f"model_name '{self.model_name}-quickgelu' if open_clip has it.",
                stacklevel=3,
            )

    @property
    def embedding_dim(self) -> int:
        """Size D of the embeddings (512 for ViT-B-32)."""
        return self._embedding_dim

    def identity(self) -> str:
        """Model, weights and preprocessing, e.g. ``open_clip:ViT-B-32|random-seed0:1a2b...|pre:...``."""
        height, width = self.image_size
        mean = ",".join(f"{v:.8g}" for v in self.mean.flatten().tolist())
        std = ",".join(f"{v:.8g}" for v in self.std.flatten().tolist())
        preprocess = f"shortest-side-bicubic-aa,centre-crop{height}x{width},clamp01,mean={mean},std={std},l2"
        return f"open_clip:{self.model_name}|{self.weights_tag()}|pre:{preprocess}"

    def preprocess(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` floats in [0, 1] → ``(N, 3, h, w)`` normalised at the model's input size."""
        height, width = self.image_size
        if tuple(images.shape[-2:]) != (height, width):
            images = TF.resize(images, [max(height, width)], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
            images = TF.center_crop(images, [height, width]).clamp(0.0, 1.0)  # bicubic overshoots
        return (images - self.mean) / self.std

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        """Embed frames.

        Args:
            frames: Floats in [0, 1], ``(..., 3, H, W)`` of any size.

        Returns:
            L2-normalised embeddings ``(..., D)``, float32.
        """
        if not frames.is_floating_point():
            raise TypeError(f"frames must be floats in [0, 1], got {frames.dtype}; divide uint8 frames by 255.")
        if frames.ndim < 3 or frames.shape[-3] != 3:
            raise ValueError(f"frames must be (..., 3, H, W), got shape {tuple(frames.shape)}")
        batch = frames.shape[:-3]
        images = self.preprocess(frames.reshape(-1, *frames.shape[-3:]).to(self.mean.dtype))
        embeddings = self.visual(images.to(next(self.visual.parameters()).dtype))
        return F.normalize(embeddings.float(), dim=-1).reshape(*batch, -1)
