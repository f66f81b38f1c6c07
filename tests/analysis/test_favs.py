"""FAVS inspection: FDED bands before/after, SCMC routing per class."""

import pytest
import torch

from avtoolkit.analysis import RoutingRecorder, band_energy, fded_bands
from avtoolkit.data.batch import AUDIO, FRAMES
from avtoolkit.fusion.fded import FDED
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


def test_routing_recorder_gives_per_class_usage_and_mean_k():
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
    labels = []
    with RoutingRecorder(model) as recorder, torch.no_grad():
        for clip_labels in (torch.tensor([0, 2]), torch.tensor([2, 2])):
            model({FRAMES: torch.rand(2, 2, 3, 64, 64), AUDIO: torch.randn(2, 2, 1, 96, 64)})
            labels.append(clip_labels)
    usage = recorder.usage(labels, num_classes=3)
    assert set(usage) == {f"stages.{i}.scmc" for i in range(3)}
    visual = usage["stages.0.scmc"]["visual"]
    assert visual.frames.tolist() == [2, 0, 6]  # two frames per clip
    assert visual.usage.shape == (3, 3) and torch.isnan(visual.usage[1]).all()
    torch.testing.assert_close(visual.usage[[0, 2]].sum(1), visual.mean_k[[0, 2]])  # usage sums to mean k
    with pytest.raises(ValueError, match="one label per clip"):
        recorder.usage(torch.tensor([0]), num_classes=3)
    with pytest.raises(ValueError, match="no SCMC"):
        RoutingRecorder(torch.nn.Linear(2, 2))
