"""Every shipped network config trains every parameter it builds.

For each network a config ships (``configs/model/*.yaml`` and the networks written into the experiment configs),
shrunk to test size with its switches (FDED, SCMC, SFM, fusion variants, encoders) kept: after one optimiser step,
a second training step gives every trainable parameter a non-zero gradient from the loss. A parameter outside the
loss's graph is dead weight in an ablation and makes plain DDP fail; one whose gradient is zero after a step (the
zero-initialised layers are non-zero by then) does not learn either. The one exception is by design: an SCMC expert
that no frame of the step selected is not computed (sparse dispatch), so only its stream's parameters may lack a
gradient in that step (the reason FAVS needs ``ddp_find_unused_parameters_true``).
"""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from avtoolkit.cli import lightning_cli
from avtoolkit.data.batch import AUDIO, FRAMES, MASK_VALID, MASKS, MIXTURE, MIXTURE_EMB, SOURCES, VISUAL_EMB
from avtoolkit.fusion.scmc import SCMC
from avtoolkit.models.separation.base import VisualStandardizer

CONFIGS = Path(__file__).parents[1] / "configs"
SEGMENTATION_DATA = CONFIGS / "data" / "s4.yaml"
SEPARATION_DATA = CONFIGS / "data" / "music.yaml"

UNET = {"channels": 4, "unet_depth": 3, "unet_base_channels": 4, "unet_max_channels": 8}
SHRINK: dict[str, dict[str, Any]] = {  # by network class: test sizes, random initialisation
    "FAVS": {
        "backbone": "test_resnet",
        "backbone_weights": None,
        "audio_weights": None,
        "audio_width": 0.0625,
        "dim": 32,
        "num_queries": 4,
        "decoder_layers": 2,
        "decoder_ffn_dim": 32,
        "encoder_layers": 1,
        "encoder_ffn_dim": 32,
        "heads": 4,
    },
    "TPAVINet": {
        "backbone": "test_resnet",
        "backbone_weights": None,
        "audio_weights": None,
        "audio_width": 0.0625,
        "dim": 16,
    },
    "SoundOfPixels": {**UNET, "backbone": "test_resnet", "backbone_weights": None},
    "HFRA": {**UNET, "visual_dim": 12, "middle_channels": 4, "align_dim": 8, "audio_encoder": None},
    "CLIPSep": {**UNET, "visual_dim": 12, "middle_channels": 4},
    "DGFNet": {
        **UNET,
        "visual_dim": 12,
        "gate_level": 2,
        "attention_groups": 2,
        "decoder_dim": 16,
        "decoder_heads": 2,
        "decoder_ffn_dim": 16,
        "decoder_layers": 1,
    },
}
VISUAL_ENCODER = {"backbone": "test_resnet", "out_channels": 12, "weights": None}  # a trainable frame encoder, shrunk


def network_configs() -> dict[str, dict[str, Any]]:
    """The task configs of every shipped network, shrunk, one per distinct result (named by a config file)."""
    found: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    files = sorted((CONFIGS / "model").glob("*.yaml")) + sorted((CONFIGS / "experiment").glob("*.yaml"))
    for path in files:
        config = yaml.safe_load(path.read_text())
        task = config.get("model", config) if path.parent.name == "experiment" else config
        if isinstance(task, str):
            continue  # a reference to a configs/model file, covered there
        task = shrink(task)
        key = json.dumps(task, sort_keys=True)
        if key not in seen:
            seen.add(key)
            found[f"{path.parent.name}/{path.stem}"] = task
    return found


def shrink(task: dict[str, Any]) -> dict[str, Any]:
    task = copy.deepcopy(task)
    arguments = task["init_args"]
    network = arguments["model"]
    name = network["class_path"].rsplit(".", 1)[1]
    network["init_args"].update(SHRINK[name])
    encoder = network["init_args"].get("visual_encoder")
    if encoder is not None:
        encoder["init_args"].update(VISUAL_ENCODER)
    if "n_fft" in arguments:  # separation: a short STFT
        arguments.update(n_fft=126, hop_length=64, warp_bins=16, lr_scheduler=None)
    arguments.pop("lr_scheduler", None)
    return task


CASES = network_configs()


def batch_for(task: Any, segmentation: bool, num_classes: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if segmentation:
        masks = torch.zeros(1, 2, 64, 64, dtype=torch.long)
        masks[:, :, 16:40, 20:44] = 1 if num_classes == 1 else 3
        masks[:, 1, 40:, :20] = 1 if num_classes == 1 else 5
        return {
            FRAMES: torch.rand(1, 2, 3, 64, 64, generator=generator),
            AUDIO: torch.randn(1, 2, 1, 96, 64, generator=generator),
            MASKS: masks,
            MASK_VALID: torch.ones(1, 2, dtype=torch.bool),
        }
    sources = torch.randn(2, 2, 2047, generator=generator) * torch.tensor([1.0, 0.5])[:, None]
    batch = {MIXTURE: sources.sum(1), SOURCES: sources, MIXTURE_EMB: torch.randn(2, 8, generator=generator)}
    network = task.model
    if getattr(network, "visual_encoder", None) is not None or type(network).__name__ == "SoundOfPixels":
        batch[FRAMES] = torch.rand(2, 2, 1, 3, 32, 32, generator=generator)
    else:
        batch[VISUAL_EMB] = torch.randn(2, 2, 12, generator=generator)
    return batch


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_parameter_of_every_shipped_network_learns(name, tmp_path):
    task_config = CASES[name]
    segmentation = task_config["class_path"].endswith("AVSegmentationTask")
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(task_config))
    data = SEGMENTATION_DATA if segmentation else SEPARATION_DATA
    args = ["--model", str(path), "--data", str(data), "--trainer.logger=false", "--trainer.accelerator=cpu"]
    torch.manual_seed(0)
    task = lightning_cli(args, run=False).model
    task.train()
    num_classes = getattr(task.model, "num_classes", 1)
    batch = batch_for(task, segmentation, num_classes)
    for module in task.modules():  # what fit does from the training clips' frozen embeddings
        if isinstance(module, VisualStandardizer):
            module.fit(torch.randn(64, module.mean.numel(), generator=torch.Generator().manual_seed(1)))
    optimizer = task.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    task.training_step(batch, 0).backward()
    optimizer.step()  # zero-initialised layers (identity at the start) are non-zero from here on
    optimizer.zero_grad(set_to_none=True)
    unselected = set()  # (SCMC expert prefix, stream attention) pairs no frame of this step selected
    hooks = [
        module.register_forward_hook(lambda m, i, out, prefix=prefix: unselected.update(not_selected(prefix, out)))
        for prefix, module in task.named_modules()
        if isinstance(module, SCMC)
    ]
    task.training_step(batch, 1).backward()
    for hook in hooks:
        hook.remove()
    trainable = {n: p for n, p in task.named_parameters() if p.requires_grad and not skipped(n, unselected)}
    assert trainable
    no_path = [n for n, p in trainable.items() if p.grad is None]
    assert not no_path, f"{name}: parameters outside the loss's graph: {no_path}"
    zero = [n for n, p in trainable.items() if not bool(p.grad.abs().sum() > 0)]
    assert not zero, f"{name}: parameters with an all-zero gradient after a step: {zero}"


def not_selected(prefix: str, output: Any) -> set[str]:
    """The parameter-name prefixes of the experts (per stream) that no frame selected in an SCMC forward."""
    idle = set()
    for e, (visual, audio) in enumerate(zip(output.usage_visual.tolist(), output.usage_audio.tolist(), strict=True)):
        expert = f"{prefix}.experts.{e}."
        if visual == 0:
            idle.add(f"{expert}visual_attention.")
        if audio == 0:
            idle.add(f"{expert}audio_attention.")
        if visual == 0 and audio == 0:
            idle.add(expert)
    return idle


def skipped(name: str, unselected: set[str]) -> bool:
    return any(name.startswith(prefix) for prefix in unselected)
