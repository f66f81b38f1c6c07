import json

import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from avtoolkit.callbacks import SeparationReport
from avtoolkit.data.batch import FRAMES, LABELS, MIXTURE, SOURCES
from avtoolkit.data.datamodules import SeparationDataModule
from avtoolkit.models.separation.sop import SoundOfPixels
from avtoolkit.tasks.separation import AVSeparationTask

L = 2047  # 32 STFT frames at hop 64


def tiny_task(**kwargs) -> AVSeparationTask:
    model = SoundOfPixels(channels=4, unet_depth=3, unet_base_channels=4, unet_max_channels=8, backbone="test_resnet")
    return AVSeparationTask(model, n_fft=126, hop_length=64, warp_bins=32, **kwargs)


def random_batch(B=2, N=2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    sources = torch.randn(B, N, L) * 0.1
    return {
        MIXTURE: sources.sum(1),
        SOURCES: sources,
        FRAMES: torch.rand(B, N, 1, 3, 32, 32),
        LABELS: torch.arange(N).expand(B, N),
    }


@pytest.mark.parametrize("mask", ["binary", "ratio"])
def test_training_step_gives_a_finite_loss_and_gradients(mask):
    task = tiny_task(mask=mask)
    loss = task.training_step(random_batch(), 0)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in task.model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("mask", ["binary", "ratio"])
def test_silent_sources_train_finitely_and_are_counted_in_evaluation(mask):
    task = tiny_task(mask=mask)
    batch = random_batch()
    batch[SOURCES][0] = 0.0  # a fully silent mixture
    batch[MIXTURE] = batch[SOURCES].sum(1)
    loss = task.training_step(batch, 0)
    assert torch.isfinite(loss)
    batch = random_batch()
    batch[SOURCES][1, 1] = 0.0  # one silent source
    batch[MIXTURE] = batch[SOURCES].sum(1)
    loss = task.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in task.model.parameters() if p.grad is not None)
    task.eval()
    with torch.no_grad():
        task._evaluate(batch, "test")
    values = task.test_metrics.compute()
    assert int(values["n_skipped_silent_ref"]) == 1  # the clip with a silent reference: skipped, counted
    assert torch.isfinite(values["sdr"]) and torch.isfinite(values["sdri"])  # from the one clean clip


def test_estimates_have_the_mixture_shape_and_a_full_mask_gives_the_mixture():
    task = tiny_task(mask="binary")
    batch = random_batch()
    task.eval()
    with torch.no_grad():
        assert task(batch).shape == (2, 2, L)
        _, spectra = task._separate(batch)
        full = torch.full((2, 2, 32, 32), 50.0)  # sigmoid(50) = 1: keep everything
        estimates = task.estimate_sources(full, spectra, L)
    assert torch.allclose(estimates[:, 0], batch[MIXTURE], atol=1e-4)


def test_masks_are_unwarped_and_thresholded():
    logits = torch.randn(2, 2, 32, 32)
    soft = tiny_task(mask="binary").linear_masks(logits)
    assert soft.shape == (2, 2, 64, 32) and 0 < float(soft.min()) < float(soft.max()) < 1
    hard = tiny_task(mask="binary", mask_threshold=0.5).linear_masks(logits)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard, (soft > 0.5).float())
    ratio = tiny_task(mask="ratio").linear_masks(torch.full((1, 1, 32, 32), 100.0))
    assert torch.allclose(ratio, torch.tensor(5.0))  # ratio masks are capped at 5


def test_each_source_is_separated_by_its_own_frames():
    task = tiny_task().eval()
    batch = random_batch()
    swapped = {**batch, FRAMES: batch[FRAMES].flip(1)}
    with torch.no_grad():
        logits = task._separate(batch)[0].mask_logits
        logits_swapped = task._separate(swapped)[0].mask_logits
    assert torch.allclose(logits.flip(1), logits_swapped, atol=1e-5)
    assert not torch.allclose(logits[:, 0], logits[:, 1])


def test_fit_validate_test_and_report(music_tree, tmp_path):
    datamodule = SeparationDataModule(
        music_tree, window=L, frames_per_source=1, image_size=32, batch_size=2, num_workers=0
    )
    task = tiny_task(mask="ratio", test_backend="mir_eval")
    report = SeparationReport(dirpath=str(tmp_path / "report"), n_examples=2)
    trainer = Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[report]
    )
    trainer.fit(task, datamodule)
    assert "val/sdr" in trainer.callback_metrics and "val/sdri" in trainer.callback_metrics
    results = trainer.test(task, datamodule)[0]
    assert results["test/n_clips"] == 3
    assert set(results) >= {"test/sdr", "test/sir", "test/sar", "test/sdr_mix", "test/sdri", "test/loss"}
    text = (tmp_path / "report" / "report.md").read_text()
    assert "SDRi" in text and "| accordion |" in text
    assert "Protocol: `default`" in text and results["test/protocol/default"] == 1
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["protocol"] == "default"
    assert (tmp_path / "report" / "spectrograms.png").stat().st_size > 10_000
    assert len(list((tmp_path / "report" / "audio").glob("*.wav"))) == 2 * 5
    assert abs(results["test/sdri"] - (results["test/sdr"] - results["test/sdr_mix"])) < 1e-4


@pytest.mark.parametrize("protocol", ["default", "sound_of_pixels", "iquery", "clipsep"])
def test_protocol_reaches_the_validation_and_test_metrics(protocol):
    masks = {"sound_of_pixels": ("binary", 0.5), "iquery": ("ratio", None)}.get(protocol, ("binary", None))
    task = tiny_task(protocol=protocol, mask=masks[0], mask_threshold=masks[1])
    assert task.val_metrics.protocol == task.test_metrics.protocol == protocol
    assert task.hparams["protocol"] == protocol


@pytest.mark.parametrize(
    ("protocol", "mask", "mask_threshold"),
    [
        ("sound_of_pixels", "binary", None),  # Sound of Pixels thresholds its binary masks at 0.5
        ("sound_of_pixels", "binary", 0.4),
        ("sound_of_pixels", "ratio", 0.5),
        ("iquery", "binary", None),  # iQuery evaluates soft ratio masks
        ("iquery", "ratio", 0.5),
        ("clipsep", "binary", 0.5),  # CLIPSep evaluates soft masks
    ],
)
def test_a_protocol_refuses_the_masks_its_evaluation_did_not_use(protocol, mask, mask_threshold):
    with pytest.raises(ValueError, match=rf"protocol '{protocol}' evaluates .*mask_threshold="):
        tiny_task(protocol=protocol, mask=mask, mask_threshold=mask_threshold)


def test_the_command_line_selects_the_protocol_and_the_report_names_it(music_tree, tmp_path, capsys):
    from avtoolkit.cli import lightning_cli, main
    from test_cli import tiny_config

    config = tiny_config(tmp_path, music_tree)
    parsed = yaml.safe_load(config.read_text())
    parsed["model"]["init_args"]["mask_threshold"] = None  # soft masks, as CLIPSep evaluates them
    config.write_text(yaml.safe_dump(parsed))
    args = ["--config", str(config), "--model.init_args.protocol", "clipsep"]
    cli = lightning_cli([*args, "--trainer.logger", "false"], run=False)
    assert cli.model.val_metrics.protocol == cli.model.test_metrics.protocol == "clipsep"
    main(["test", *args])
    printed = capsys.readouterr().out
    assert "test/protocol/clipsep" in printed  # the results table Lightning prints
    report = tmp_path / "report"
    assert "Protocol: `clipsep`" in (report / "report.md").read_text()
    assert " ± " in (report / "report.md").read_text()  # CLIPSep reports mean ± SEM
    summary = json.loads((report / "metrics.json").read_text())
    assert summary["protocol"] == "clipsep" and summary["n_clips"] == 3
    logged = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "test/protocol/clipsep" in logged.splitlines()[0]


def test_fit_standardises_frozen_embeddings_with_the_training_clips_statistics(music_tree, tmp_path):
    from avtoolkit.models.encoders.clip import CLIPImageEncoder
    from avtoolkit.models.separation.hfra import CLIPSep

    with pytest.warns(UserWarning, match="random weights"):
        encoder = CLIPImageEncoder("ViT-S-32")  # random weights: the statistics, not the features, are tested
    datamodule = SeparationDataModule(
        music_tree,
        window=L,
        frames_per_source=1,
        image_size=32,
        visual_encoder=encoder,
        cache_dir=tmp_path,
        batch_size=2,
        num_workers=0,
    )
    network = CLIPSep(
        "late",
        visual_dim=384,
        channels=4,
        unet_depth=3,
        unet_base_channels=4,
        unet_max_channels=8,
        standardize_visual=True,
    )
    task = AVSeparationTask(network, n_fft=126, hop_length=64, warp_bins=32)
    assert network.visual_norm is not None and not bool(network.visual_norm.fitted)
    trainer = Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False)
    trainer.fit(task, datamodule)
    training = datamodule.training_visual_embeddings().double()  # every embedded frame of the training clips
    assert bool(network.visual_norm.fitted)
    torch.testing.assert_close(network.visual_norm.mean, training.mean(0).float())
    torch.testing.assert_close(network.visual_norm.std, training.var(0, unbiased=False).add(1e-5).sqrt().float())
    plain = SeparationDataModule(music_tree, window=L, frames_per_source=1, image_size=32, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match="standardize_visual needs frozen visual embeddings"):
        plain.training_visual_embeddings()


def test_backbone_lr_multiplier_slows_only_the_image_backbone():
    task = tiny_task(backbone_lr_multiplier=0.0, optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    optimizer = task.configure_optimizers()
    assert sorted(group["lr"] for group in optimizer.param_groups) == [0.0, 0.1]
    backbone = task.model.backbone_parameters()
    in_backbone = {id(p) for p in backbone}
    others = [p for p in task.parameters() if p.requires_grad and id(p) not in in_backbone]
    assert backbone and others
    before = {id(p): p.detach().clone() for p in task.parameters()}
    task.training_step(random_batch(), 0).backward()
    optimizer.step()
    assert all(torch.equal(p, before[id(p)]) for p in backbone)  # the backbone's rate is 0 × 0.1
    assert all(p.grad is not None for p in backbone)  # ... although the loss reaches it
    assert sum(not torch.equal(p, before[id(p)]) for p in others) > len(others) // 2
