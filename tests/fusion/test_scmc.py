import math

import pytest
import torch

from avtoolkit.fusion.attention import sine_positional_encoding_2d
from avtoolkit.fusion.scmc import SCMC, STC, SCMCExpert, SCMCOutput, entropy_guided_k, sparse_routing_weights

DIM = 8


def make(num_experts: int = 3, **kwargs) -> SCMC:
    torch.manual_seed(0)
    return SCMC(DIM, num_experts=num_experts, heads=2, **kwargs).eval()


def inputs(B: int = 2, T: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    visual = torch.randn(B, T, DIM, 4, 5, generator=generator)
    audio = torch.randn(B, T, DIM, 3, 2, generator=generator)
    return visual, audio


def route_by_channel_zero(router: torch.nn.Module, scale: float = 1000.0) -> None:
    """Crafted router: logits = (scale · GELU(pooled channel 0), 0, ..., 0); STCs are the identity at init."""
    mlp = router.mlp
    with torch.no_grad():
        mlp[0].weight.copy_(torch.eye(DIM))
        mlp[0].bias.zero_()
        mlp[2].weight.zero_()
        mlp[2].bias.zero_()
        mlp[2].weight[0, 0] = scale


def crafted_mixed_k() -> tuple[SCMC, torch.Tensor, torch.Tensor]:
    """SCMC whose visual stream gets k = 0, an intermediate k and k = N_e on different frames."""
    scmc = make(num_experts=4)
    route_by_channel_zero(scmc.router_from_audio)
    visual, audio = inputs(B=2, T=3)
    levels = torch.tensor([[1.0, 0.0, 0.008], [0.006, 1.0, 0.0]])  # pooled audio channel 0 per frame
    audio[:, :, 0] = levels[:, :, None, None]
    return scmc, visual, audio


def entropy(weights: torch.Tensor) -> torch.Tensor:
    return -(weights * torch.log(weights + 1e-8)).sum(-1)


# ---------------------------------------------------------------------------------------------------------------------
# STC


def test_stc_is_identity_at_init():
    torch.manual_seed(0)
    stc = STC(DIM)
    x = torch.randn(2, 3, DIM, 4, 5)
    assert torch.equal(stc(x), x)


def randomise(module: torch.nn.Module, seed: int = 3, std: float = 0.5) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(std * torch.randn(parameter.shape, generator=generator))


def test_stc_frames_match_sequence_and_temporal_gate_is_local():
    torch.manual_seed(0)
    stc = STC(DIM, temporal_kernel=3)
    randomise(stc)
    x = torch.randn(2, 5, DIM, 4, 4)
    out = stc(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    # a subset of frames with the sequence's temporal gates gives the same frames
    frames = torch.tensor([7, 1, 4])
    gates = stc.temporal_gate(x.mean(dim=(-2, -1))).flatten()
    subset = stc.forward_frames(x.flatten(0, 1)[frames], gates[frames])
    assert torch.allclose(subset, out.flatten(0, 1)[frames], atol=1e-6)
    # gates lie in (0, 2); a change at frame 2 reaches frames 1..3 only (kernel 3), and not the other sequence
    assert ((gates > 0) & (gates < 2)).all()
    y = x.clone()
    y[0, 2] += 1.0
    changed = (stc(y) - out).flatten(2).abs().amax(-1) > 0
    assert changed[0].tolist() == [False, True, True, True, False]
    assert not changed[1].any()


def test_stc_bad_arguments():
    for kwargs in (
        {"dim": 0},
        {"dim": 8, "reduction": 0},
        {"dim": 8, "spatial_kernel": 4},
        {"dim": 8, "temporal_kernel": 0},
    ):
        with pytest.raises(ValueError):
            STC(**kwargs)
    with pytest.raises(ValueError, match="STC expects"):
        STC(8)(torch.randn(2, 4, 8, 8))


# ---------------------------------------------------------------------------------------------------------------------
# Eq. 9: entropy-guided k and the sparse weights


def test_entropy_k_extremes():
    one_hot = torch.eye(4)
    uniform = torch.full((1, 4), 0.25)
    assert entropy_guided_k(one_hot, 0, 4).tolist() == [0, 0, 0, 0]  # E ≤ 0 (1e-8 in the log): ceil → k_min
    assert entropy_guided_k(one_hot, 1, 3).tolist() == [1, 1, 1, 1]
    assert entropy_guided_k(uniform, 0, 4).tolist() == [4]
    assert entropy_guided_k(uniform, 1, 3).tolist() == [3]
    # two equal experts of four: E_norm = 1/2, k = ceil(4 · 1/2) = 2; and ceil rounds a little uncertainty up
    assert entropy_guided_k(torch.tensor([[0.5, 0.5, 0.0, 0.0]]), 0, 4).tolist() == [2]
    assert entropy_guided_k(torch.tensor([[0.999, 0.001, 0.0, 0.0]]), 0, 4).tolist() == [1]
    # one expert: E_norm is defined as 1
    assert entropy_guided_k(torch.ones(2, 3, 1), 0, 1).tolist() == [[1, 1, 1], [1, 1, 1]]
    assert entropy_guided_k(torch.ones(2, 1), 0, 0).tolist() == [0, 0]


@pytest.mark.parametrize(("k_min", "k_max"), [(0, 5), (1, 5), (2, 3), (0, 0), (5, 5)])
def test_entropy_k_in_range_and_monotone_in_entropy(k_min, k_max):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 5, generator=generator, dtype=torch.float64)
    temperature = torch.logspace(-2, 2, 400, dtype=torch.float64)[:, None]
    weights = torch.softmax(logits / temperature, dim=-1)
    k = entropy_guided_k(weights, k_min, k_max)
    assert k.dtype == torch.int64 and k.min() >= k_min and k.max() <= k_max
    order = entropy(weights).argsort()
    assert (k[order].diff() >= 0).all()
    if k_max > k_min:
        assert len(k.unique()) > 1  # the family spans several k


def test_entropy_k_bad_range():
    for k_min, k_max in ((-1, 2), (3, 2), (0, 5)):
        with pytest.raises(ValueError, match="k_min"):
            entropy_guided_k(torch.full((2, 4), 0.25), k_min, k_max)


def test_sparse_weights_keep_top_k_renormalised():
    generator = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(6, 7, 5, generator=generator), dim=-1)
    k = torch.randint(0, 6, (6, 7), generator=generator)
    k[0, 0], k[0, 1] = 0, 5
    sparse, selected = sparse_routing_weights(weights, k)
    assert torch.equal(selected.sum(-1), k)
    active = k >= 1
    assert torch.allclose(sparse.sum(-1)[active], torch.ones(int(active.sum())), atol=1e-6)
    assert (sparse[~selected] == 0).all() and (sparse[~active] == 0).all()
    # the kept experts are the largest ones, in proportion to W
    smallest_kept = weights.masked_fill(~selected, math.inf).amin(-1)
    largest_dropped = weights.masked_fill(selected, -math.inf).amax(-1)
    assert (smallest_kept[active] >= largest_dropped[active]).all()
    ratio = sparse[selected] / weights[selected]
    row_of = torch.arange(42).reshape(6, 7)[..., None].expand_as(selected)[selected]
    for row in row_of.unique():
        assert torch.allclose(ratio[row_of == row], ratio[row_of == row][0].expand(int((row_of == row).sum())))
    with pytest.raises(ValueError, match="one k per routing row"):
        sparse_routing_weights(weights, k[:, :3])


# ---------------------------------------------------------------------------------------------------------------------
# SCMC


@pytest.mark.parametrize(("B", "T"), [(1, 1), (2, 1), (3, 2)])
def test_output_shapes_and_usage(B, T):
    scmc = make(num_experts=3)
    visual, audio = inputs(B, T)
    out = scmc(visual, audio)
    assert isinstance(out, SCMCOutput)
    assert out.visual.shape == visual.shape and out.audio.shape == audio.shape
    assert out.balance_loss.shape == () and out.balance_loss >= 0
    for k, usage, weights in (
        (out.k_visual, out.usage_visual, out.weights_visual),
        (out.k_audio, out.usage_audio, out.weights_audio),
    ):
        assert k.shape == (B, T) and k.dtype == torch.int64
        assert k.min() >= 0 and k.max() <= 3
        assert usage.shape == (3,) and (usage >= 0).all() and (usage <= 1).all()
        assert torch.allclose(usage.sum(), k.float().mean())  # each frame selects k experts
        assert weights.shape == (B, T, 3)
        assert torch.equal((weights > 0).sum(-1), k)
        assert torch.allclose(weights.sum(-1)[k >= 1], torch.ones(int((k >= 1).sum())), atol=1e-6)


def test_crafted_router_gives_mixed_k_and_k0_frames_pass_through():
    scmc, visual, audio = crafted_mixed_k()
    out = scmc(visual, audio)
    k = out.k_visual
    assert k[0, 0] == 0 and k[1, 1] == 0  # one-hot routing
    assert k[0, 1] == 4 and k[1, 2] == 4  # uniform routing
    assert k[0, 2] == 1 and k[1, 0] == 2  # in between: logit gaps ≈ 4 (E_norm ≈ 0.19) and ≈ 3 (E_norm ≈ 0.38)
    still = k == 0
    assert torch.equal(out.visual[still], visual[still])
    assert ((out.visual - visual)[~still].flatten(1).abs().amax(-1) > 1e-4).all()
    assert (out.weights_visual[still] == 0).all()


def test_sparse_equals_dense_with_mixed_k():
    scmc, visual, audio = crafted_mixed_k()
    sparse, dense = scmc(visual, audio), scmc(visual, audio, dense=True)
    assert sparse.k_visual.unique().tolist() == [0, 1, 2, 4]
    for a, b in ((sparse.visual, dense.visual), (sparse.audio, dense.audio)):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(sparse.k_audio, dense.k_audio) and torch.equal(sparse.weights_visual, dense.weights_visual)

    # random inputs with trained-looking (random, sharpened) routers and STCs, several k per stream
    scmc = make(num_experts=4)
    randomise(scmc, seed=5)
    with torch.no_grad():
        for router in (scmc.router_from_audio, scmc.router_from_visual):
            router.mlp[2].weight.mul_(2.0)
    visual, audio = inputs(B=3, T=4, seed=2)
    sparse, dense = scmc(visual, audio), scmc(visual, audio, dense=True)
    assert len(sparse.k_visual.unique()) >= 2 and len(sparse.k_audio.unique()) >= 2
    assert not torch.allclose(sparse.visual, visual, atol=1e-3)
    assert torch.allclose(sparse.visual, dense.visual, atol=1e-6)
    assert torch.allclose(sparse.audio, dense.audio, atol=1e-6)


class HostSyncCounter:
    """Counts the Python-level calls that copy a tensor's values to the host (and so wait for the device)."""

    METHODS = ("tolist", "item", "nonzero", "__bool__", "__int__", "__float__", "numpy", "cpu")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in self.METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, getattr(torch.Tensor, name)))
        monkeypatch.setattr(torch, "nonzero", self._counted("torch.nonzero", torch.nonzero))

    def _counted(self, name: str, method):
        def counted(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted


def test_sparse_dispatch_runs_experts_on_their_frames_only_with_one_host_sync(monkeypatch):
    # top-1 routing by the sign of the other modality's pooled channel 0, in both streams: a positive value gives
    # expert 0, a negative one ties the logits of experts 1..3 at 0 (→ expert 1). Experts 2 and 3 are selected by
    # no frame and must not run; experts 0 and 1 must get exactly their frames, in ascending order.
    scmc = make(num_experts=4, top_k=1)
    route_by_channel_zero(scmc.router_from_audio)
    route_by_channel_zero(scmc.router_from_visual)
    visual, audio = inputs(B=2, T=4)
    audio[:, :, 0] = torch.tensor([[1.0, -1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, 1.0]])[:, :, None, None]
    visual[:, :, 0] = torch.tensor([[-1.0, -1.0, 1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])[:, :, None, None]
    expected = {
        ("visual", 0): [0, 3, 5, 6, 7],
        ("visual", 1): [1, 2, 4],
        ("audio", 0): [2, 4, 7],
        ("audio", 1): [0, 1, 3, 5, 6],
    }
    dense = scmc(visual, audio, dense=True)

    calls: list[tuple[str, int, torch.Tensor]] = []
    for e, expert in enumerate(scmc.experts):

        def spy(stream, query, context, frames, *args, e=e, update=expert.update):
            calls.append((stream, e, frames))
            return update(stream, query, context, frames, *args)

        monkeypatch.setattr(expert, "update", spy)
    counter = HostSyncCounter(monkeypatch)
    sparse = scmc(visual, audio)
    syncs = list(counter.calls)
    dense_again = scmc(visual, audio, dense=True)
    dense_syncs = counter.calls[len(syncs) :]
    monkeypatch.undo()

    assert syncs == ["tolist"]  # one host synchronisation for both streams
    assert dense_syncs == []
    sparse_calls = calls[: len(expected)]
    assert {(stream, e): frames.tolist() for stream, e, frames in sparse_calls} == expected  # experts 2, 3 never run
    assert len(sparse_calls) == len(expected) and len(calls) == len(expected) + 2 * 4  # dense: every expert
    assert sparse.usage_visual.tolist() == [5 / 8, 3 / 8, 0.0, 0.0]
    for a, b in ((sparse.visual, dense.visual), (sparse.audio, dense.audio), (dense_again.visual, dense.visual)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.allclose(sparse.visual, visual, atol=1e-3)


def test_k_histogram_counts_frames_per_k():
    scmc, visual, audio = crafted_mixed_k()
    out = scmc(visual, audio)
    for k, histogram in ((out.k_visual, out.k_histogram_visual), (out.k_audio, out.k_histogram_audio)):
        assert histogram.shape == (5,) and histogram.dtype == torch.int64
        assert histogram.tolist() == [int((k == value).sum()) for value in range(5)]
    assert out.k_histogram_visual.tolist() == [2, 1, 1, 0, 2]
    assert torch.equal(out.selected_visual, out.weights_visual > 0)


def test_k_zero_everywhere_is_identity():
    visual, audio = inputs()
    for scmc in (make(top_k=0), make(k_min=0, k_max=0)):
        out = scmc(visual, audio)
        assert torch.equal(out.visual, visual) and torch.equal(out.audio, audio)
        assert (out.k_visual == 0).all() and (out.usage_audio == 0).all() and (out.weights_visual == 0).all()


def test_fixed_top_k_uses_k_experts_everywhere():
    scmc = make(num_experts=4, top_k=2)
    out = scmc(*inputs())
    assert (out.k_visual == 2).all() and (out.k_audio == 2).all()
    assert torch.allclose(out.usage_visual.sum(), torch.tensor(2.0))


def test_single_expert_is_input_plus_its_update():
    scmc = make(num_experts=1)
    # one expert: nothing to route, so no router is built (its weights could never learn: softmax over one is 1)
    assert scmc.router_from_audio is None and scmc.router_from_visual is None
    assert not any(name.startswith("router") for name, _ in scmc.named_parameters())
    visual, audio = inputs(B=2, T=2)
    out = scmc(visual, audio)
    assert (out.k_visual == 1).all() and (out.k_audio == 1).all()
    assert torch.equal(out.weights_visual, torch.ones(2, 2, 1))
    expert = scmc.experts[0]
    assert isinstance(expert, SCMCExpert)
    frames = torch.arange(4)
    pos_v, pos_a = sine_positional_encoding_2d(4, 5, DIM), sine_positional_encoding_2d(3, 2, DIM)
    u = expert.update("visual", visual, audio, frames, pos_v, pos_a).unflatten(0, (2, 2))
    assert torch.allclose(out.visual, visual + u, atol=1e-6)


def test_attention_is_per_frame_at_init():
    # at init every STC (routers included) is the identity, so nothing mixes frames: changing one audio frame
    # changes the outputs of that frame only
    scmc = make(num_experts=3)
    visual, audio = inputs(B=2, T=3)
    out = scmc(visual, audio)
    audio2 = audio.clone()
    audio2[1, 1] += 1.0
    out2 = scmc(visual, audio2)
    changed_v = (out2.visual - out.visual).flatten(2).abs().amax(-1) > 0
    changed_a = (out2.audio - out.audio).flatten(2).abs().amax(-1) > 0
    expected = torch.zeros(2, 3, dtype=torch.bool)
    expected[1, 1] = True
    assert torch.equal(changed_v, expected) and torch.equal(changed_a, expected)


def test_gradients_reach_router_and_every_stc_gate():
    # Entropy-guided k with sharpened random routers: k ∈ {2, 3} of 3 on different frames (not k = N_e everywhere),
    # every expert selected somewhere. The temporal (per-frame) and spatial (per-token) gates of every expert STC
    # must get gradients comparable to their channel gate's. Measured: ratios 3 to 65 here; with the gates before
    # the per-token LayerNorm (the old order) they were 8e-5 to 2e-3, leakage through the LayerNorm's ε and the
    # channel gate only.
    scmc = make(num_experts=3, balance_weight=0.0).train()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for router in (scmc.router_from_audio, scmc.router_from_visual):
            router.mlp[2].weight.copy_(4.0 * torch.randn(router.mlp[2].weight.shape, generator=generator))
    visual, audio = inputs(B=2, T=3)
    visual.requires_grad_(True)
    out = scmc(visual, audio)
    for k, usage in ((out.k_visual, out.usage_visual), (out.k_audio, out.usage_audio)):
        assert (k >= 2).all() and (k < 3).any()  # k ≥ 2: every frame's W̄ carries the router's gradient
        assert (usage > 0).all() and (usage < 1).any()
    generator = torch.Generator().manual_seed(9)
    loss = (out.visual * torch.randn(out.visual.shape, generator=generator)).sum()
    loss = loss + (out.audio * torch.randn(out.audio.shape, generator=generator)).sum()
    loss.backward()
    assert visual.grad is not None and visual.grad.abs().sum() > 0

    def norm(parameter: torch.nn.Parameter) -> float:
        assert parameter.grad is not None
        return parameter.grad.norm().item()

    for router in (scmc.router_from_audio, scmc.router_from_visual):
        assert all(norm(p) > 0 for p in router.mlp.parameters())
        assert norm(router.stc.temporal.weight) > 0.01 * norm(router.mlp[2].weight)
        assert norm(router.stc.spatial.weight) > 0.01 * norm(router.mlp[2].weight)
    for expert in scmc.experts:
        for attention in (expert.visual_attention, expert.audio_attention):
            assert norm(attention.attention.in_proj_weight) > 0 and norm(attention.attention.out_proj.weight) > 0
            assert norm(attention.norm_query.weight) > 0 and norm(attention.norm_value.weight) > 0
        for stc in (expert.stc_query, expert.stc_key, expert.stc_value):
            channel = norm(stc.channel[2].weight)
            assert channel > 0
            assert norm(stc.temporal.weight) > 0.1 * channel
            assert norm(stc.spatial.weight) > 0.1 * channel


def randomised_expert() -> SCMCExpert:
    """An expert with random attention and LayerNorms and moderately random (not saturated) STC gates."""
    torch.manual_seed(0)
    expert = SCMCExpert(DIM, heads=2).eval()
    randomise(expert, seed=3)
    for stc in (expert.stc_query, expert.stc_key, expert.stc_value):
        randomise(stc, seed=4, std=0.1)
    return expert


@pytest.mark.parametrize("stream", ["visual", "audio"])
@pytest.mark.parametrize("enhancer", ["stc_query", "stc_key", "stc_value"])
@pytest.mark.parametrize("gate", ["temporal", "spatial"])
def test_stc_gates_change_the_expert_update(monkeypatch, stream, enhancer, gate):
    # A gate raised by 10 % (temporal: one frame; spatial: every other token of every frame) must change the
    # expert's update by a relative amount of the order of the change. Measured: 1.0e-2 to 7.8e-2 here; with the
    # gates before the per-token LayerNorm (the old order) 2e-7 to 1.5e-4.
    expert = randomised_expert()
    visual, audio = inputs(B=2, T=3)
    pos_visual, pos_audio = sine_positional_encoding_2d(4, 5, DIM), sine_positional_encoding_2d(3, 2, DIM)
    query, context, query_pos, context_pos = (
        (visual, audio, pos_visual, pos_audio) if stream == "visual" else (audio, visual, pos_audio, pos_visual)
    )
    frames = torch.arange(6)
    base = expert.update(stream, query, context, frames, query_pos, context_pos)
    stc = getattr(expert, enhancer)
    if gate == "temporal":
        temporal_gate = stc.temporal_gate

        def raised(pooled: torch.Tensor) -> torch.Tensor:
            return temporal_gate(pooled) * torch.tensor([1.0, 1.0, 1.0, 1.0, 1.1, 1.0]).view(2, 3)

        monkeypatch.setattr(stc, "temporal_gate", raised)
    else:
        spatial_gate = stc.spatial_gate

        def raised(frames: torch.Tensor) -> torch.Tensor:
            gates = spatial_gate(frames)
            every_other = torch.arange(gates[0, 0].numel()).view(gates.shape[-2:]) % 2 == 0
            return torch.where(every_other, 1.1 * gates, gates)

        monkeypatch.setattr(stc, "spatial_gate", raised)
    changed = expert.update(stream, query, context, frames, query_pos, context_pos)
    if gate == "temporal":  # frame 4 only
        assert torch.equal(changed[[0, 1, 2, 3, 5]], base[[0, 1, 2, 3, 5]])
        base, changed = base[4], changed[4]
    relative = ((changed - base).norm() / base.norm()).item()
    assert 5e-3 < relative < 0.5


def test_balance_loss():
    visual, audio = inputs()
    assert make(balance_weight=0.0)(visual, audio).balance_loss.item() == 0.0
    assert make(balance_weight=0.5)(visual, audio).balance_loss > 0  # random routers are not exactly uniform

    uniform = make(num_experts=4, balance_weight=0.5)
    collapsed = make(num_experts=4, balance_weight=0.5)
    with torch.no_grad():
        for router in (uniform.router_from_audio, uniform.router_from_visual):
            router.mlp[2].weight.zero_()
            router.mlp[2].bias.zero_()
        for router in (collapsed.router_from_audio, collapsed.router_from_visual):
            router.mlp[2].weight.zero_()
            router.mlp[2].bias.copy_(torch.tensor([1000.0, 0.0, 0.0, 0.0]))
    loss = uniform(visual, audio).balance_loss
    assert 0 <= loss.item() < 1e-6
    # all frames on one expert: KL(one-hot ‖ uniform) = log N_e per stream
    assert torch.allclose(collapsed(visual, audio).balance_loss, torch.tensor(0.5 * 2 * math.log(4)))

    # the balance loss alone trains the routers, even with k = 1 (where W̄ is the constant 1)
    scmc = make(num_experts=3, top_k=1, balance_weight=1.0)
    scmc(visual, audio).balance_loss.backward()
    assert scmc.router_from_audio.mlp[2].weight.grad.abs().sum() > 0


def test_entropy_loss_is_the_weighted_mean_normalised_routing_entropy():
    visual, audio = inputs(B=2, T=3)
    assert make(num_experts=4)(visual, audio).entropy_loss.item() == 0.0  # off by default
    scmc = make(num_experts=4, balance_weight=0.0, entropy_weight=0.3)
    with torch.no_grad():
        for router in (scmc.router_from_audio, scmc.router_from_visual):
            router.mlp[2].weight.mul_(20.0)
    out = scmc(visual, audio)
    expected = 0.0
    for router, source in ((scmc.router_from_audio, audio), (scmc.router_from_visual, visual)):
        weights = torch.softmax(router(source).detach(), dim=-1)
        expected += 0.3 * float((entropy(weights) / math.log(4)).mean())
    assert 0.05 < expected < 0.55  # neither uniform (0.6) nor one-hot (0)
    torch.testing.assert_close(out.entropy_loss.item(), expected)
    assert out.balance_loss.item() == 0.0
    torch.testing.assert_close(out.auxiliary_loss, out.balance_loss + out.entropy_loss)
    # one expert: nothing to choose, no penalty
    assert make(num_experts=1, entropy_weight=1.0)(visual, audio).entropy_loss.item() == 0.0


def train_routing(entropy_weight: float, steps: int = 40) -> SCMCOutput:
    """Adam on the routers with the auxiliary losses only (balance weight 1), on 16 fixed random frames."""
    torch.manual_seed(0)
    scmc = SCMC(DIM, num_experts=4, heads=2, balance_weight=1.0, entropy_weight=entropy_weight)
    generator = torch.Generator().manual_seed(1)
    visual = torch.randn(4, 4, DIM, 2, 2, generator=generator)
    audio = torch.randn(4, 4, DIM, 2, 1, generator=generator)
    routers = [*scmc.router_from_audio.parameters(), *scmc.router_from_visual.parameters()]
    optimiser = torch.optim.Adam(routers, lr=3e-2)
    initial = scmc(visual, audio)
    assert (initial.k_visual == 4).all() and (initial.k_audio == 4).all()  # near-uniform routing at init
    for _ in range(steps):
        out = scmc(visual, audio)
        optimiser.zero_grad()
        out.auxiliary_loss.backward()
        optimiser.step()
    with torch.no_grad():
        return scmc(visual, audio)


@pytest.mark.usefixtures("one_thread")  # many tiny steps: a spinning thread pool slows them a lot
def test_entropy_penalty_makes_k_dynamic_and_balance_keeps_usage_spread():
    # Without the penalty the balance loss is already minimal at per-frame-uniform routing: k stays N_e = 4.
    balanced = train_routing(entropy_weight=0.0)
    assert balanced.k_histogram_visual.tolist() == [0, 0, 0, 0, 16]
    assert balanced.k_histogram_audio.tolist() == [0, 0, 0, 0, 16]
    # With it every frame becomes confident (k ≤ 1 here, after 40 steps: k = 1 on 9 to 11 frames of 16, k = 0 where
    # W is numerically one-hot), while the balance loss spreads the frames over all experts.
    confident = train_routing(entropy_weight=0.5)
    for k, histogram, usage in (
        (confident.k_visual, confident.k_histogram_visual, confident.usage_visual),
        (confident.k_audio, confident.k_histogram_audio, confident.usage_audio),
    ):
        assert (k < 4).float().mean() >= 0.9
        assert histogram[1] >= 4  # some frames still use one expert
        assert (usage > 0).all()  # every expert is used by some frame
    for selected in (confident.selected_visual, confident.selected_audio):
        assert (selected.flatten(0, 1).sum(0) > 0).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_experts": 0},
        {"heads": 3},
        {"heads": 0},
        {"k_min": -1},
        {"k_min": 3, "k_max": 2},
        {"k_max": 4},
        {"top_k": 4},
        {"top_k": -1},
        {"balance_weight": -0.1},
        {"entropy_weight": -0.1},
        {"entropy_weight": math.nan},
        {"dropout": 1.0},
    ],
)
def test_bad_arguments(kwargs):
    arguments = {"dim": DIM, "num_experts": 3, "heads": 2} | kwargs
    with pytest.raises(ValueError):
        SCMC(**arguments)


def test_bad_dim_and_inputs():
    with pytest.raises(ValueError, match="multiple of 4"):
        SCMC(6, heads=2)
    scmc = make()
    visual, audio = inputs(B=2, T=3)
    with pytest.raises(ValueError, match="visual features"):
        scmc(visual[:, :, :4], audio)
    with pytest.raises(ValueError, match="audio features"):
        scmc(visual, audio[:, :2])
    with pytest.raises(ValueError, match="audio features"):
        scmc(visual, audio[0])
