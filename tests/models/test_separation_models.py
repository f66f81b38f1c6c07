"""HFRA / CLIPSep / DGFNet: shapes, per-source conditioning, alignment, an observable DGFNet gate."""

import pytest
import torch
from fixtures.tiny_models import TINY_DGFNET

from avtoolkit.data.batch import FRAMES, MIXTURE, MIXTURE_EMB, VISUAL_EMB
from avtoolkit.models.encoders.clap import CLAPAudioEncoder
from avtoolkit.models.encoders.visual import PooledFrameEncoder
from avtoolkit.models.separation.base import VisualStandardizer
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


def test_alignment_pulls_the_pooled_bottleneck_itself_when_the_widths_match():
    # UNET's bottleneck has 16 channels: with align_dim 16 there is no projection to absorb the alignment
    model = HFRA(visual_dim=D, middle_channels=4, channels=8, align_weight=0.5, align_dim=16, **UNET)
    assert model.align_projection is None
    spectrogram, batch = inputs()
    batch[MIXTURE_EMB] = torch.randn(B, 16, generator=torch.Generator().manual_seed(3))
    align = model(spectrogram, batch).losses["align"]
    z_a = model.unet.encode(spectrogram)[0].mean(dim=(-2, -1))  # GAP of the innermost encoder output
    target = batch[MIXTURE_EMB]
    expected = 0.5 * (1 - (z_a * target).sum(-1) / (z_a.norm(dim=-1) * target.norm(dim=-1))).mean()  # λ (1 − cos)
    torch.testing.assert_close(align, expected)
    align.backward()
    assert model.unet.down[0].weight.grad is not None and model.unet.down[0].weight.grad.abs().sum() > 0
    # another width: a projection maps z_a to it, and it is trained
    projected = HFRA(visual_dim=D, middle_channels=4, channels=8, align_weight=0.5, align_dim=8, **UNET)
    assert projected.align_projection is not None
    projected(spectrogram, inputs()[1]).losses["align"].backward()
    assert projected.align_projection.weight.grad is not None


def test_alignment_is_a_training_loss_only():
    calls = []
    encoder = torch.nn.Identity()
    encoder.register_forward_hook(lambda module, args, output: calls.append(args[0]))
    model = HFRA(
        visual_dim=D, middle_channels=4, channels=8, align_weight=1.0, align_dim=2047, audio_encoder=encoder, **UNET
    )
    spectrogram, batch = inputs()
    del batch[MIXTURE_EMB]
    model.eval()
    with torch.no_grad():
        assert model(spectrogram, batch).losses == {}
    assert calls == []  # the audio encoder (CLAP) does not run at evaluation or prediction
    model.train()
    assert "align" in model(spectrogram, batch).losses
    assert len(calls) == 1 and torch.equal(calls[0], batch[MIXTURE])


def test_on_the_fly_clap_target_is_the_mixtures_embedding():
    with pytest.warns(UserWarning, match="random weights"):
        clap = CLAPAudioEncoder(sample_rate=11025)  # a random-weight CLAP: the path, not the features, is tested
    model = HFRA(
        visual_dim=D, middle_channels=4, channels=8, align_weight=1.0, align_dim=512, audio_encoder=clap, **UNET
    )
    spectrogram, batch = inputs()
    del batch[MIXTURE_EMB]
    sources = torch.randn(B, N, 2047, generator=torch.Generator().manual_seed(5))
    batch[MIXTURE] = sources.sum(1)
    align = model(spectrogram, batch).losses["align"]
    assert model.align_projection is not None
    z_a = model.align_projection(model.unet.encode(spectrogram)[0].mean(dim=(-2, -1)))
    for target, equal in ((clap(batch[MIXTURE]), True), (clap(sources[:, 0]), False)):
        expected = 1 - torch.nn.functional.cosine_similarity(z_a, target, dim=-1).mean()
        assert torch.allclose(align, expected, atol=1e-6) == equal


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


def test_dgfnet_decodes_each_source_from_its_own_picture():
    model = tiny_dgfnet().eval()
    spectrogram, batch = inputs()
    with torch.no_grad():
        before = model(spectrogram, batch).mask_logits
        changed = {**batch, VISUAL_EMB: batch[VISUAL_EMB].clone()}
        changed[VISUAL_EMB][:, 2] += 3.0  # only source 2's picture changes
        after = model(spectrogram, changed).mask_logits
    torch.testing.assert_close(after[:, :2], before[:, :2])  # sources 0 and 1 do not read source 2's map
    assert not torch.allclose(after[:, 2], before[:, 2])


def test_visual_standardizer_uses_training_statistics_never_the_batch():
    generator = torch.Generator().manual_seed(0)
    training = 5.0 + 2.0 * torch.randn(200, D, generator=generator)  # a large shared component, as frozen CLIP's
    norm = VisualStandardizer(D)
    with pytest.raises(RuntimeError, match="no statistics yet"):
        norm(training[:2])
    norm.fit(training)
    torch.testing.assert_close(norm.mean, training.double().mean(0).float())
    torch.testing.assert_close(norm.std, training.double().var(0, unbiased=False).add(1e-5).sqrt().float())
    pair = 5.0 + 2.0 * torch.randn(1, 2, D, generator=generator)  # one mixture of two sources
    out = norm.train()(pair)
    torch.testing.assert_close(out, (pair - norm.mean) / norm.std)  # not ±1, as batch statistics would give
    other = pair.clone()
    other[0, 1] += 10.0
    torch.testing.assert_close(norm(other)[0, 0], out[0, 0])  # a source's vector ignores the other source


@pytest.mark.parametrize(
    "make", [lambda **kw: HFRA(visual_dim=D, middle_channels=4, channels=8, **UNET, **kw), tiny_dgfnet]
)
def test_visual_standardisation_is_an_explicit_option_saved_with_the_model(make):
    assert make().visual_norm is None  # off unless asked for
    model = make(standardize_visual=True)
    assert isinstance(model.visual_norm, VisualStandardizer)
    model.visual_norm.fit(3.0 + torch.randn(50, D))
    restored = make(standardize_visual=True)
    restored.load_state_dict(model.state_dict())
    assert bool(restored.visual_norm.fitted) and torch.equal(restored.visual_norm.mean, model.visual_norm.mean)
