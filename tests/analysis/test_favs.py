"""FAVS inspection: FDED bands before/after, SCMC routing per class."""

import pytest
import torch

from avtoolkit.analysis import RoutingRecorder, band_energy, fded_bands
from avtoolkit.analysis.favs import ExpertUsage
from avtoolkit.data.batch import AUDIO, FRAMES
from avtoolkit.fusion.fded import FDED
from avtoolkit.fusion.scmc import SCMC, SCMCOutput
from avtoolkit.models.segmentation.favs import FAVS


def test_bands_before_sum_to_the_preprocessed_input_and_after_to_the_output():
    torch.manual_seed(0)
    fded = FDED(8, "visual", groups=2).double()
    for parameter in fded.parameters():  # leave the identity initialisation so "after" differs from "before"
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.randn(2, 3, 8, 7, 6, dtype=torch.float64)
    bands = fded_bands(fded, x)
    assert set(bands["before"]) == set(bands["after"]) == {"high", "mid", "low", "residual"}
    torch.testing.assert_close(sum(bands["before"].values()), fded.preprocess(x))
    torch.testing.assert_close(sum(bands["after"].values()), fded(x))
    energy = band_energy(bands["after"])
    assert energy["high"].shape == (2, 3, 7, 6) and bool((energy["high"] >= 0).all())


def by_hand(outputs: list[SCMCOutput], stream: str, labels: list[int], num_classes: int) -> tuple[list, list, list]:
    """Per-class usage, mean k and frame counts of one stream, frame by frame from the SCMC outputs."""
    num_experts = outputs[0].weights_visual.shape[-1]
    frames_of = [0] * num_classes
    k_sum = [0] * num_classes
    selected_sum = [[0] * num_experts for _ in range(num_classes)]
    clips = iter(labels)
    for output in outputs:
        selected, k = getattr(output, f"selected_{stream}"), getattr(output, f"k_{stream}")
        for b in range(k.shape[0]):
            label = next(clips)
            for t in range(k.shape[1]):
                frames_of[label] += 1
                k_sum[label] += int(k[b, t])
                for e in range(num_experts):
                    selected_sum[label][e] += int(selected[b, t, e])
    usage = [[x / frames_of[c] for x in selected_sum[c]] if frames_of[c] else None for c in range(num_classes)]
    mean_k = [k_sum[c] / frames_of[c] if frames_of[c] else None for c in range(num_classes)]
    return usage, mean_k, frames_of


def check_against_hand(usage: ExpertUsage, outputs: list[SCMCOutput], stream: str, labels: list[int]) -> None:
    num_classes = len(usage.frames)
    expected_usage, expected_mean_k, expected_frames = by_hand(outputs, stream, labels, num_classes)
    assert usage.frames.tolist() == expected_frames
    for c in range(num_classes):
        if expected_frames[c] == 0:
            assert torch.isnan(usage.usage[c]).all() and torch.isnan(usage.mean_k[c])
        else:
            assert usage.usage[c].tolist() == pytest.approx(expected_usage[c])
            assert usage.mean_k[c].item() == pytest.approx(expected_mean_k[c])


class OutputCatcher:
    """Keeps the outputs of every SCMC of a model, by module name."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.outputs: dict[str, list[SCMCOutput]] = {}
        for name, module in model.named_modules():
            if isinstance(module, SCMC):
                self.outputs[name] = []
                module.register_forward_hook(lambda m, i, out, name=name: self.outputs[name].append(out))


def route_by_channel_zero(router: torch.nn.Module, dim: int, scale: float) -> None:
    """Routing logits ``(scale · GELU(pooled channel 0), 0, ..., 0)`` (the routers' STCs are the identity at init)."""
    with torch.no_grad():
        router.mlp[0].weight.copy_(torch.eye(dim))
        router.mlp[0].bias.zero_()
        router.mlp[2].weight.zero_()
        router.mlp[2].bias.zero_()
        router.mlp[2].weight[0, 0] = scale


class TwoSCMCs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = SCMC(8, num_experts=3, heads=2)
        self.second = SCMC(8, num_experts=3, heads=2, top_k=1)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> None:
        routed = self.first(visual, audio)
        self.second(routed.visual, routed.audio)


def test_routing_recorder_matches_crafted_routing_per_class():
    # The visual stream of the first SCMC is routed by the pooled audio channel 0: level 1 → logits (1000·1, 0, 0),
    # one-hot, k = 0; level 0 → uniform, k = 3; level 0.01 → logit gap ≈ 5, k = 1 (expert 0). The clips of class
    # 0 hold the k = 0 and k = 3 frames, class 1 the k = 1 frames, class 2 a mix. The second SCMC uses top-1.
    torch.manual_seed(0)
    model = TwoSCMCs().eval()
    for scmc in (model.first, model.second):
        route_by_channel_zero(scmc.router_from_audio, 8, scale=1000.0)
    levels = [
        torch.tensor([[1.0, 0.0], [0.01, 0.01]]),  # classes 0, 1
        torch.tensor([[0.0, 1.0], [0.01, 0.0]]),  # classes 0, 2
    ]
    labels = [0, 1, 0, 2]
    generator = torch.Generator().manual_seed(1)
    catcher = OutputCatcher(model)
    with RoutingRecorder(model) as recorder, torch.no_grad():
        for level in levels:
            visual = torch.randn(2, 2, 8, 3, 3, generator=generator)
            audio = torch.randn(2, 2, 8, 2, 2, generator=generator)
            audio[:, :, 0] = level[:, :, None, None]
            model(visual, audio)
    first = catcher.outputs["first"]
    assert torch.cat([out.k_visual.flatten() for out in first]).tolist() == [0, 3, 1, 1, 3, 0, 1, 3]
    usage = recorder.usage(torch.tensor(labels), num_classes=4)
    assert set(usage) == {"first", "second"}
    visual = usage["first"]["visual"]
    assert visual.frames.tolist() == [4, 2, 2, 0]
    assert visual.mean_k.tolist()[:3] == pytest.approx([1.5, 1.0, 2.0])
    expected = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0], [1.0, 0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(visual.usage[:3], expected)
    for name, outputs in catcher.outputs.items():
        for stream in ("visual", "audio"):
            check_against_hand(usage[name][stream], outputs, stream, labels)
    assert usage["second"]["audio"].mean_k.tolist()[:3] == [1.0, 1.0, 1.0]


def test_routing_recorder_on_favs_with_perturbed_routers():
    torch.manual_seed(0)
    model = FAVS(
        backbone="test_resnet",
        audio_width=0.0625,
        dim=32,
        num_queries=4,
        decoder_layers=1,
        decoder_ffn_dim=32,
        encoder_layers=0,
        encoder_ffn_dim=32,
        heads=4,
        num_experts=3,
    ).eval()
    # large random routers: confident, frame-dependent routing instead of the near-uniform k ≡ N_e of the init
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SCMC):
                for router in (module.router_from_audio, module.router_from_visual):
                    for parameter in router.mlp.parameters():
                        parameter.copy_(2.0 * torch.randn(parameter.shape, generator=generator))
    catcher = OutputCatcher(model)
    labels = [0, 2, 2, 2]
    with RoutingRecorder(model) as recorder, torch.no_grad():
        for _ in range(2):
            frames = torch.rand(2, 2, 3, 64, 64, generator=generator)
            model({FRAMES: frames, AUDIO: 3 * torch.randn(2, 2, 1, 96, 64, generator=generator)})
    usage = recorder.usage([torch.tensor(labels[:2]), torch.tensor(labels[2:])], num_classes=3)
    assert set(usage) == set(catcher.outputs) == {f"stages.{i}.scmc" for i in range(3)}
    all_k = torch.cat([out.k_visual.flatten() for outputs in catcher.outputs.values() for out in outputs])
    assert (all_k < 3).any()  # not the initial k ≡ N_e
    for name, outputs in catcher.outputs.items():
        for stream in ("visual", "audio"):
            check_against_hand(usage[name][stream], outputs, stream, labels)
            assert usage[name][stream].frames.tolist() == [2, 0, 6]  # two frames per clip
            torch.testing.assert_close(usage[name][stream].usage[[0, 2]].sum(1), usage[name][stream].mean_k[[0, 2]])
    with pytest.raises(ValueError, match="one label per clip"):
        recorder.usage(torch.tensor([0]), num_classes=3)
    with pytest.raises(ValueError, match="no SCMC"):
        RoutingRecorder(torch.nn.Linear(2, 2))
