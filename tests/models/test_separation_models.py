"""HFRA / CLIPSep / DGFNet: shapes, per-source conditioning, alignment, an observable DGFNet gate."""

import pytest
import torch
from fixtures.tiny_models import TINY_DGFNET

from avtoolkit.data.batch import FRAMES, MIXTURE, MIXTURE_EMB, VISUAL_EMB
from avtoolkit.models.encoders.visual import PooledFrameEncoder
from avtoolkit.models.separation.dgfnet import DGFNet
from avtoolkit.models.separation.hfra import HFRA, CLIPSep

B, N, D = 2, 3, 12
UNET = {"unet_depth": 4, "unet_base_channels": 8, "unet_max_channels": 16}


def inputs(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    spectrogram = torch.randn(B, 1, 32, 16, generator=g)
    batch = {
        VISUAL_EMB: torch.randn(B, N, D, generator=g),
        MIXTURE: torch.randn(B, 2047, generator=g),
        MIXTURE_EMB: torch.randn(B, 8, generator=g),
    }
    return spectrogram, batch


@pytest.mark.parametrize(("middle", "late"), [(True, True), (True, False), (False, True)])
def test_hfra_switches_give_masks_for_every_source(middle, late):
    model = HFRA(visual_dim=D, middle=middle, late=late, middle_channels=4, channels=8, **UNET).eval()
    spectrogram, batch = inputs()
    assert model(spectrogram, batch).mask_logits.shape == (B, N, 32, 16)


@pytest.mark.parametrize(("middle", "late"), [(True, True), (True, False), (False, True)])
def test_each_source_is_decoded_from_its_own_fused_features(middle, late):
    """The public HFRA code computed every mask from the last source's features; here source 0 ignores source 2."""
    model = HFRA(visual_dim=D, middle=middle, late=late, middle_channels=4, channels=8, **UNET).eval()
    spectrogram, batch = inputs()
    with torch.no_grad():
        before = model(spectrogram, batch).mask_logits
        changed = {**batch, VISUAL_EMB: batch[VISUAL_EMB].clone()}
        changed[VISUAL_EMB][:, 2] += 3.0
        after = model(spectrogram, changed).mask_logits
    torch.testing.assert_close(after[:, :2], before[:, :2])
    assert not torch.allclose(after[:, 2], before[:, 2])


def test_alignment_loss_uses_the_mixture_embedding_and_trains_the_encoder():
    model = HFRA(visual_dim=D, middle_channels=4, channels=8, align_weight=0.5, align_dim=8, **UNET)
    spectrogram, batch = inputs()
    output = model(spectrogram, batch)
    align = output.losses["align"]
    assert 0.0 <= float(align.detach()) <= 1.0  # λ (1 − cos) with λ = 0.5
    align.backward()
    assert model.align_projection is not None and model.align_projection.weight.grad is not None
    assert model.unet.down[0].weight.grad is not None and model.unet.down[0].weight.grad.abs().sum() > 0
    # a target equal to the projected pooled bottleneck gives zero loss
    with torch.no_grad():
        z = model.align_projection(model.unet.encode(spectrogram)[0].mean(dim=(-2, -1)))
        assert float(model(spectrogram, {**batch, MIXTURE_EMB: z}).losses["align"]) < 1e-6


def test_alignment_without_a_target_is_a_clear_error():
    model = HFRA(visual_dim=D, middle_channels=4, channels=8, align_weight=1.0, align_dim=8, **UNET)
    spectrogram, batch = inputs()
    del batch[MIXTURE_EMB]
    with pytest.raises(ValueError, match="mixture embedding cache, or give the model an audio_encoder"):
        model(spectrogram, batch)


def test_visual_vectors_come_from_frames_when_no_embeddings_are_cached():
    encoder = PooledFrameEncoder("test_resnet", out_channels=D, activation="none")
    model = CLIPSep(fusion="late", visual_dim=D, channels=8, visual_encoder=encoder, **UNET).eval()
    spectrogram, batch = inputs()
    del batch[VISUAL_EMB]
    batch[FRAMES] = torch.rand(B, N, 2, 3, 32, 32)
    assert model(spectrogram, batch).mask_logits.shape == (B, N, 32, 16)
    no_encoder = CLIPSep(fusion="middle", visual_dim=D, channels=8, **UNET)
    with pytest.raises(ValueError, match="no precomputed visual embeddings"):
        no_encoder(spectrogram, batch)


def tiny_dgfnet(**overrides) -> DGFNet:
    args = {"visual_dim": D, **TINY_DGFNET, "decoder_layers": 2, **UNET}
    return DGFNet(**{**args, **overrides})


def test_dgfnet_masks_and_an_observable_gate():
    model = tiny_dgfnet().eval()
    spectrogram, batch = inputs()
    gates = []
    handle = model.gate.register_forward_hook(lambda module, args, output: gates.append(output[1]))
    with torch.no_grad():
        logits = model(spectrogram, batch).mask_logits
    handle.remove()
    assert logits.shape == (B, N, 32, 16)
    (sigma,) = gates
    assert sigma.shape[:3] == (B, N, model.unet.level_channels(2))
    assert float(sigma.min()) >= 0.0 and float(sigma.max()) <= 1.0


def test_dgfnet_gate_changes_the_output_and_sources_follow_their_visual_features():
    model = tiny_dgfnet().eval()
    spectrogram, batch = inputs()
    with torch.no_grad():
        logits = model(spectrogram, batch).mask_logits
        model.gate.gate_conv.bias.fill_(-1e4)  # close the gate: audio features only
        closed = model(spectrogram, batch).mask_logits
    assert not torch.allclose(logits, closed)
    perm = torch.tensor([1, 2, 0])
    with torch.no_grad():
        permuted = model(spectrogram, {**batch, VISUAL_EMB: batch[VISUAL_EMB][:, perm]}).mask_logits
    torch.testing.assert_close(permuted, closed[:, perm], atol=1e-5, rtol=1e-5)


def test_dgfnet_rejects_a_gate_level_outside_the_decoder():
    with pytest.raises(ValueError, match="gate_level"):
        tiny_dgfnet(gate_level=4)


@pytest.mark.parametrize("make", [lambda: HFRA(visual_dim=D, middle_channels=4, channels=8, **UNET), tiny_dgfnet])
def test_visual_vectors_are_standardised_so_a_shared_component_does_not_matter(make):
    """Frozen embeddings share a large common direction; the models see them centred and scaled per dimension."""
    model = make().train()  # batch statistics; at evaluation the running ones (a fixed affine map)
    spectrogram, batch = inputs()
    common = 5.0 + 2.0 * torch.randn(D)
    shifted = {**batch, VISUAL_EMB: 3.0 * batch[VISUAL_EMB] + common}
    torch.manual_seed(0)
    logits = model(spectrogram, batch).mask_logits
    torch.manual_seed(0)
    torch.testing.assert_close(model(spectrogram, shifted).mask_logits, logits, atol=1e-4, rtol=1e-4)
    assert model.visual_norm.running_mean.abs().sum() > 0  # statistics are tracked for evaluation
