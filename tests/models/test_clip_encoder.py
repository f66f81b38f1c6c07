"""CLIPImageEncoder: frozen, deterministic random init, local checkpoints, identity. ViT-S-32 keeps it fast."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from avtoolkit.models.encoders.clip import CLIPImageEncoder

SMALL = "ViT-S-32"  # open_clip architecture, 384-d, 4× cheaper than ViT-B-32; no download (random init)


def build(model_name: str = SMALL, weights: str | Path | None = None, seed: int = 0) -> CLIPImageEncoder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weights and QuickGELU notices
        return CLIPImageEncoder(model_name, None if weights is None else str(weights), seed)


@pytest.fixture(scope="module")
def encoder() -> CLIPImageEncoder:
    with pytest.warns(UserWarning, match="random weights .* random features"):
        return CLIPImageEncoder(SMALL)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.rand(1, 2, 3, 40, 56, generator=torch.Generator().manual_seed(0))  # (B, Tv, 3, H, W), not square


def test_frozen_and_stays_in_eval_mode(encoder: CLIPImageEncoder, frames: torch.Tensor):
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = nn.ModuleDict({"clip": encoder, "head": nn.Linear(2, 2)})
    parent.train()  # what Lightning does at the start of each training epoch
    assert parent["head"].training
    assert not any(module.training for module in encoder.modules())
    out = encoder(frames.requires_grad_(True))
    assert not out.requires_grad


def test_shapes_and_unit_norm(encoder: CLIPImageEncoder, frames: torch.Tensor):
    out = encoder(frames)
    assert out.shape == (1, 2, 384) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(1, 2))
    assert encoder.embedding_dim == 384
    assert encoder(torch.rand(3, 224, 224)).shape == (384,)  # one picture, already at the input size


def test_default_is_vit_b32_with_512_dims():
    clip = build("ViT-B-32")
    assert clip.embedding_dim == 512 and clip.image_size == (224, 224)
    assert clip(torch.rand(1, 3, 64, 64)).shape == (1, 512)


def test_input_checks(encoder: CLIPImageEncoder):
    with pytest.raises(TypeError, match="divide uint8"):
        encoder(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        encoder(torch.rand(4, 8, 8))
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        CLIPImageEncoder("no-such-model")


def test_random_init_is_deterministic_per_seed(encoder: CLIPImageEncoder, frames: torch.Tensor):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    same = build(seed=0)
    assert torch.equal(torch.rand(3), before)  # building does not disturb the global RNG
    assert all(
        torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), same.state_dict().values(), strict=True)
    )
    assert same.identity() == encoder.identity()
    other = build(seed=1)
    assert other.identity() != encoder.identity()
    assert not torch.allclose(other(frames), encoder(frames))


def test_random_init_is_identical_in_another_process(encoder: CLIPImageEncoder):
    code = (
        "import warnings, torch; warnings.simplefilter('ignore'); torch.set_num_threads(1); "
        "from avtoolkit.models.encoders.clip import CLIPImageEncoder; "
        f"print(CLIPImageEncoder({SMALL!r}, seed=0).identity())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == encoder.identity()


def test_checkpoint_round_trip_in_every_format(encoder: CLIPImageEncoder, frames: torch.Tensor, tmp_path: Path):
    from safetensors.torch import save_file

    expected = encoder(frames)
    own = encoder.state_dict()  # keys visual.* like a whole open_clip model
    full_training = {  # an open_clip training checkpoint: DataParallel prefix, text tower, wrapped
        "epoch": 3,
        "state_dict": {
            f"module.{k}": v for k, v in {**own, "logit_scale": torch.ones(()), "transformer.x": torch.ones(2)}.items()
        },
    }
    torch.save(full_training, tmp_path / "training.pt")
    torch.save(encoder.visual.state_dict(), tmp_path / "visual_only.pt")
    save_file({k: v.contiguous() for k, v in own.items()}, str(tmp_path / "own.safetensors"))
    for name in ("training.pt", "visual_only.pt", "own.safetensors"):
        loaded = build(weights=tmp_path / name, seed=7)  # the seed is irrelevant once weights are loaded
        assert torch.equal(loaded(frames), expected), name
        assert loaded.identity().split("|")[1] == "weights:" + encoder.weights_digest()[:16]


def test_identity_changes_with_the_weights(encoder: CLIPImageEncoder, frames: torch.Tensor, tmp_path: Path):
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    state["visual.proj"] += 0.01
    torch.save(state, tmp_path / "changed.pt")
    changed = build(weights=tmp_path / "changed.pt")
    assert changed.identity() != encoder.identity()
    assert changed.identity().split("|")[0] == encoder.identity().split("|")[0] == f"open_clip:{SMALL}"
    assert not torch.allclose(changed(frames), encoder(frames))


def test_mismatched_checkpoint_names_file_model_and_keys(encoder: CLIPImageEncoder, tmp_path: Path):
    state = dict(encoder.state_dict())
    del state["visual.ln_post.bias"]
    state["visual.proj"] = torch.zeros(384, 512)
    state["visual.extra"] = torch.zeros(1)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        build(weights=path)
    message = str(error.value)
    for expected in (str(path), repr(SMALL), "ln_post.bias", "proj: file (384, 512) vs model (384, 384)", "extra"):
        assert expected in message


def test_unreadable_and_missing_files(tmp_path: Path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pt"):
        build(weights=tmp_path / "notes.pt")
    with pytest.raises(FileNotFoundError, match=r"absent\.pt"):
        CLIPImageEncoder(SMALL, weights=str(tmp_path / "absent.pt"))
