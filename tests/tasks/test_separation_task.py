import pytest
import torch
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
    assert (tmp_path / "report" / "spectrograms.png").stat().st_size > 10_000
    assert len(list((tmp_path / "report" / "audio").glob("*.wav"))) == 2 * 5
    assert abs(results["test/sdri"] - (results["test/sdr"] - results["test/sdr_mix"])) < 1e-4
