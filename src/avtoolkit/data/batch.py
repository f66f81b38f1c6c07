"""Keys and shapes of the samples and batches that flow from the datamodules to the tasks.

Every dataset returns a ``dict[str, Tensor]`` using only these keys; collation adds the leading batch
dimension ``B``. Shapes are given per batch. ``N`` sources per mixture, ``L`` audio samples, ``Tv`` frames
per source, ``T`` video frames of a segmentation clip, ``H×W`` image size.

Separation (mix-and-separate):
    MIXTURE     (B, L) float32      sum of the scaled sources
    SOURCES     (B, N, L) float32   the scaled sources (the targets); an absent-source query's target is zeros
                                    (MIXTURE still holds that clip's audio)
    FRAMES      (B, N, Tv, 3, H, W) uint8 from the workers, float32 in [0, 1] after device transfer
    VISUAL_EMB  (B, N, D) float32   precomputed frame embeddings (instead of FRAMES)
    MIXTURE_EMB (B, D) float32      precomputed audio embedding of the mixture (CLAP; HFRA's alignment target)
    LABELS      (B, N) int64        class index of each source (for per-class analysis); for an absent-source
                                    query (training, ``absent_source_ratio``) the queried class, its source silent

Segmentation (AVSBench S4 / MS3 / AVSS):
    FRAMES      (B, T, 3, H, W) uint8 from the workers, float32 in [0, 1] after device transfer
    WAVEFORM    (B, L) float32      16 kHz audio of the clip, zero-padded to T seconds (workers)
    WAVEFORM_LENGTH (B,) int64      samples of WAVEFORM that come from the file (the rest is padding)
    AUDIO       (B, T, 1, 96, 64)   VGGish log-mel, one 0.96 s window per frame (computed on device, or read
                                    from the datamodule's log-mel cache: avtoolkit.data.features)
    MASKS       (B, T, H, W) int64  0/1 (S4, MS3) or class index 0..C-1 with 0 = background (AVSS)
                                    (all 0 for a training sample given negative audio: negative_audio_ratio)
    MASK_VALID  (B, T) bool         frames that have a ground-truth mask (evaluated/trained on)

Prediction on a user's media (avtoolkit.data.media: where each prediction goes back in the input):
    FRAME_INDEX     (B, T) int64    index of each frame among the video's sampled frames; -1 = padding
    DISPLAY_FRAMES  (B, T, 3, Hd, Wd) uint8, the same frames at the overlay size (the video's aspect ratio)
    MIXTURE_START   (B,) int64      first sample of the window in the input audio
    MIXTURE_LENGTH  (B,) int64      samples of the window that come from the input (the rest is padding)

Added by the datamodules to the batches of their splits (train, val, test), whatever the task:
    SAMPLE_INDEX    (B,) int64      index of each sample in its split's dataset; the datamodule's
                                    ``sample_names(split, indices)`` names the clips a sample is made of (for messages)
"""

from collections.abc import Mapping

from torch import Tensor

MIXTURE = "mixture"
SOURCES = "sources"
FRAMES = "frames"
VISUAL_EMB = "visual_emb"
MIXTURE_EMB = "mixture_emb"
LABELS = "labels"
WAVEFORM = "waveform"
WAVEFORM_LENGTH = "waveform_length"
AUDIO = "audio"
MASKS = "masks"
MASK_VALID = "mask_valid"
FRAME_INDEX = "frame_index"
DISPLAY_FRAMES = "display_frames"
MIXTURE_START = "mixture_start"
MIXTURE_LENGTH = "mixture_length"
SAMPLE_INDEX = "sample_index"

Batch = Mapping[str, Tensor]
"""A batch (or a sample before collation): keys from this module, values tensors."""
