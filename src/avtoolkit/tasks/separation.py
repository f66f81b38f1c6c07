"""Audio-visual source separation by mix-and-separate (Sound-of-Pixels lineage)."""

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from avtoolkit.data.audio import Spectrogram
from avtoolkit.data.batch import LABELS, MIXTURE, SOURCES, Batch
from avtoolkit.losses.masks import mask_weight, weighted_bce, weighted_l1
from avtoolkit.metrics.separation import SeparationMetrics, SeparationProtocol
from avtoolkit.models.separation.base import SeparationModel, SeparationOutput, VisualStandardizer
from avtoolkit.tasks.base import BaseAVTask

_EPS = 1e-10
_RATIO_MAX = 5.0
# What each compat protocol's evaluation does with the masks: the mask kinds it accepts, the threshold, in words.
_PROTOCOL_MASKS: dict[str, tuple[tuple[str, ...], float | None, str]] = {
    "sound_of_pixels": (("binary",), 0.5, "binary masks thresholded at 0.5"),
    "iquery": (("ratio",), None, "soft ratio masks"),
    "clipsep": (("binary", "ratio"), None, "soft masks"),
}


class AVSeparationTask(BaseAVTask):
    """Separate each source of a mixture guided by its picture.

    The task owns the spectral front end: STFT of the mixture and sources on the batch's device, log-frequency
    warp, mask targets and weights; the network maps the mixture's log-magnitude and the per-source visual input
    to one mask per source. At evaluation the mask is unwarped, applied to the mixture magnitude, and inverted
    with the mixture phase; SDR/SIR/SAR are computed on the waveforms.

    Args:
        model: The separation network.
        n_fft: STFT size.
        hop_length: STFT hop in samples.
        warp_bins: Rows of the log-frequency-warped spectrogram (``None``: no warp).
        mask: "binary" (target: source > ½ mixture, weighted BCE, sigmoid) or "ratio" (target: source / mixture
            clamped to [0, 5], weighted L1, softplus: a ReLU output dies at zero masks and cannot recover).
        mask_threshold: Binarise predicted masks at this value at evaluation (Sound of Pixels: 0.5); ``None``
            keeps soft masks.
        protocol: How validation and test clips are scored and averaged (see
            :class:`~avtoolkit.metrics.separation.SeparationMetrics`): "default" (mean over sources, then over
            mixtures; silent estimates scored at a floor), "sound_of_pixels" (mean of per-batch means, mixtures
            with a silent signal skipped), "iquery" (the same averaging), "clipsep" (the first, queried source of
            each mixture only; mean ± SEM). A compat protocol also fixes how its authors' evaluation made the
            masks, and the task refuses a conflicting ``mask``/``mask_threshold`` rather than change them:
            "sound_of_pixels" needs ``mask="binary"`` and ``mask_threshold=0.5``, "iquery" ``mask="ratio"`` and
            ``mask_threshold=None`` (soft ratio masks), "clipsep" ``mask_threshold=None`` (soft masks, either
            kind). The test results name it: ``test/protocol/<name>`` is logged as 1.
        backbone_lr_multiplier: Learning-rate factor of the pre-trained image backbone of the network's frame
            encoder (Sound of Pixels trains its ImageNet ResNet at a tenth of the audio network's rate); 1: one rate.
        val_backend: BSS Eval implementation during validation ("fast": batched torch).
        test_backend: BSS Eval implementation during testing ("mir_eval": the exact reference).
        optimizer: Optimiser factory.
        lr_scheduler: Scheduler factory, or ``None``.
        lr_scheduler_interval: Step the scheduler per optimiser step or per epoch.
    """

    val_metrics: SeparationMetrics
    test_metrics: SeparationMetrics

    def __init__(
        self,
        model: SeparationModel,
        n_fft: int = 1022,
        hop_length: int = 256,
        warp_bins: int | None = 256,
        mask: Literal["binary", "ratio"] = "binary",
        mask_threshold: float | None = None,
        protocol: SeparationProtocol = "default",
        backbone_lr_multiplier: float = 1.0,
        val_backend: Literal["fast", "mir_eval"] = "fast",
        test_backend: Literal["fast", "mir_eval"] = "mir_eval",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval)
        self.model = model
        self.spectrogram = Spectrogram(n_fft, hop_length, warp_bins)
        check_protocol_masks(protocol, mask, mask_threshold)
        self.mask = mask
        self.mask_threshold = mask_threshold
        self.protocol = protocol
        if backbone_lr_multiplier < 0:
            raise ValueError(f"backbone_lr_multiplier must be >= 0, got {backbone_lr_multiplier}")
        self.backbone_lr_multiplier = backbone_lr_multiplier
        self.val_metrics = SeparationMetrics(backend=val_backend, protocol=protocol)
        self.test_metrics = SeparationMetrics(backend=test_backend, protocol=protocol)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The image backbone's parameters at ``backbone_lr_multiplier`` × the rate, the others at the rate."""
        backbone = {id(p) for p in self.model.backbone_parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [
            {"params": [p for p in trainable if id(p) not in backbone]},
            {"params": [p for p in trainable if id(p) in backbone], "lr_multiplier": self.backbone_lr_multiplier},
        ]
        return [group for group in groups if group["params"]]

    # -- the shared forward pass -----------------------------------------------------------------------------

    def front_end(self, mixture: Tensor) -> dict[str, Tensor]:
        """The spectral front end of ``(B, L)`` mixtures, on their device.

        Returns:
            ``input`` (the network's ``(B, 1, F', T)`` log-magnitude, warped), ``mixture_magnitude`` and
            ``mixture_phase`` ``(B, F, T)``, ``mixture_warped`` ``(B, F', T)``.
        """
        mixture_stft = self.spectrogram.stft(mixture)  # (B, F, T) complex
        mixture_magnitude = self.spectrogram.magnitude(mixture_stft)
        mixture_warped = self.spectrogram.warp(mixture_magnitude)  # (B, F', T)
        return {
            "input": torch.log(mixture_warped + _EPS).unsqueeze(1),
            "mixture_magnitude": mixture_magnitude,
            "mixture_phase": mixture_stft.angle(),
            "mixture_warped": mixture_warped,
        }

    def _separate(self, batch: Batch) -> tuple[SeparationOutput, dict[str, Tensor]]:
        """Front end + network. Returns the network output and the spectrogram tensors used downstream."""
        spectra = self.front_end(batch[MIXTURE])
        return self.model(spectra["input"], batch), spectra

    def mask_activation(self, logits: Tensor) -> Tensor:
        """Mask values from logits: sigmoid for binary masks, softplus (capped at 5) for ratio masks."""
        if self.mask == "binary":
            return torch.sigmoid(logits)
        return torch.clamp(F.softplus(logits), max=_RATIO_MAX)

    def _mask_loss(self, logits: Tensor, batch: Batch, mixture_warped: Tensor) -> Tensor:
        """Weighted BCE (binary) or weighted L1 (ratio) against targets from the warped source magnitudes."""
        sources_warped = self.spectrogram.warp(self.spectrogram.magnitude(self.spectrogram.stft(batch[SOURCES])))
        mixture = mixture_warped.unsqueeze(1)
        weight = mask_weight(mixture).expand_as(sources_warped)
        if self.mask == "binary":
            target = (sources_warped > 0.5 * mixture).float()
            return weighted_bce(logits, target, weight)
        target = torch.clamp(sources_warped / (mixture + _EPS), 0.0, _RATIO_MAX)
        return weighted_l1(self.mask_activation(logits), target, weight)

    def linear_masks(self, mask_logits: Tensor) -> Tensor:
        """Masks on the linear-frequency STFT grid ``(B, N, F, T)``: activation, unwarp, optional threshold."""
        masks = self.spectrogram.unwarp(self.mask_activation(mask_logits))
        if self.mask_threshold is not None:
            masks = (masks > self.mask_threshold).float()
        return masks

    def estimate_sources(self, mask_logits: Tensor, spectra: dict[str, Tensor], length: int) -> Tensor:
        """Waveforms ``(B, N, length)`` from mask logits: masks × mixture magnitude, mixture phase, iSTFT."""
        magnitude = self.linear_masks(mask_logits) * spectra["mixture_magnitude"].unsqueeze(1)
        phase = spectra["mixture_phase"].unsqueeze(1).expand_as(magnitude)
        return self.spectrogram.istft(magnitude, phase, length)

    # -- Lightning hooks -------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        """Fit the network's visual standardisers (if any, and not restored from a checkpoint) on the training clips.

        The statistics come from the datamodule's frozen embeddings of the training clips
        (``training_visual_embeddings()``), once, and are saved with the network.
        """
        standardizers = [m for m in self.model.modules() if isinstance(m, VisualStandardizer) and not bool(m.fitted)]
        if not standardizers:
            return
        source = getattr(self.trainer, "datamodule", None)
        if source is None or not hasattr(source, "training_visual_embeddings"):
            raise ValueError(
                "the model standardises its visual vectors (standardize_visual: true) but the trainer has no "
                "datamodule with training_visual_embeddings(); use SeparationDataModule with a visual_encoder"
            )
        embeddings = source.training_visual_embeddings()
        for standardizer in standardizers:
            standardizer.fit(embeddings.to(standardizer.mean.device))

    def forward(self, batch: Batch) -> Tensor:
        """Separated waveforms ``(B, N, L)`` for a batch (mixture + per-source visual inputs)."""
        output, spectra = self._separate(batch)
        return self.estimate_sources(output.mask_logits, spectra, batch[MIXTURE].shape[-1])

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Mask objective plus the network's auxiliary losses."""
        output, spectra = self._separate(batch)
        loss = self._mask_loss(output.mask_logits, batch, spectra["mixture_warped"])
        batch_size = batch[MIXTURE].shape[0]
        self.log("train/mask_loss", loss, batch_size=batch_size)
        for name, value in output.losses.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
            loss = loss + value
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    def _evaluate(self, batch: Batch, stage: str) -> Tensor:
        output, spectra = self._separate(batch)
        loss = self._mask_loss(output.mask_logits, batch, spectra["mixture_warped"])
        self.log(f"{stage}/loss", loss, batch_size=batch[MIXTURE].shape[0], sync_dist=True, add_dataloader_idx=False)
        estimates = self.estimate_sources(output.mask_logits, spectra, batch[MIXTURE].shape[-1])
        metrics = self.evaluation_metrics(stage)
        metrics.update(estimates, batch[SOURCES], batch[MIXTURE], batch.get(LABELS))
        return estimates

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """Loss and fast BSS Eval on the held-out mixtures; returns the estimates for media callbacks."""
        return {"estimates": self._evaluate(batch, "val")}

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Loss and exact BSS Eval of the batch's test set; returns the estimates for report callbacks."""
        return {"estimates": self._evaluate(batch, self.test_sets()[dataloader_idx])}

    def on_test_epoch_end(self) -> None:
        """Log the dataset-level test metrics, and ``test/protocol/<name>`` = 1 so that the results name it."""
        super().on_test_epoch_end()
        self.log(f"test/protocol/{self.protocol}", 1.0)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Separated waveforms ``(B, N, L)``."""
        return self(batch)


def check_protocol_masks(protocol: str, mask: str, mask_threshold: float | None) -> None:
    """Refuse a mask set-up that a compat protocol's evaluation did not use.

    Raises:
        ValueError: Naming the ``mask`` and ``mask_threshold`` the protocol needs.
    """
    if protocol not in _PROTOCOL_MASKS:
        return
    kinds, threshold, what = _PROTOCOL_MASKS[protocol]
    if mask not in kinds or mask_threshold != threshold:
        needed = f"mask={kinds[0]!r}" if len(kinds) == 1 else f"mask in {kinds}"
        raise ValueError(
            f"protocol {protocol!r} evaluates {what}: set {needed} and mask_threshold={threshold} "
            f"(got mask={mask!r}, mask_threshold={mask_threshold})"
        )
