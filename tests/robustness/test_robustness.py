"""The robustness suite: each corruption does what it claims, the metrics match hand computations, the report."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from fixtures.tiny_models import TINY_DGFNET
from PIL import Image

from avtoolkit.cli import lightning_cli, main
from avtoolkit.data.batch import FRAMES, LABELS, MASK_VALID, MASKS, MIXTURE, WAVEFORM, WAVEFORM_LENGTH
from avtoolkit.metrics import BinarySegmentationMetrics
from avtoolkit.robustness import run_robustness
from avtoolkit.robustness.corruptions import (
    OCCLUSION_FILL,
    SEGMENTATION_CORRUPTIONS,
    SEPARATION_CORRUPTIONS,
    add_noise_at_snr,
    black_frames,
    blur_frames,
    loudness_matched_noise,
    measured_snr_db,
    occlude_frames,
    occlusion_side,
    signal_power,
)
from avtoolkit.robustness.metrics import ForegroundRate, energy_ratio_db, global_scores, harmonic_mean
from avtoolkit.robustness.suite import (
    QueryPictures,
    apply_segmentation_audio,
    apply_separation_case,
    choose_absent_donors,
    choose_offscreen_donors,
    choose_same_class_donors,
    load_experiment,
)

CONFIGS = Path(__file__).parents[2] / "configs" / "experiment"
UNET = {"channels": 4, "unet_depth": 3, "unet_base_channels": 4, "unet_max_channels": 8}
SEPARATION_TASK = {"n_fft": 254, "hop_length": 128, "warp_bins": 32}
SEPARATION_DATA = {"window": 4095, "image_size": 32, "batch_size": 2, "num_workers": 0}


def tiny_config(folder: Path, quickstart: str, root: Path, network: dict, task: dict, data: dict) -> Path:
    """A quick-start experiment with a tiny network on a tiny tree (no logger, no callbacks)."""
    config = yaml.safe_load((CONFIGS / f"{quickstart}.yaml").read_text())
    config["trainer"].update(default_root_dir=str(folder), logger=False, callbacks=[], enable_progress_bar=False)
    config["model"]["init_args"]["model"]["init_args"].update(network)
    config["model"]["init_args"].update(task)
    config["data"]["init_args"].update(root=str(root), **data)
    path = folder / f"{quickstart}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def save_checkpoint(config: Path, path: Path) -> Path:
    """A Lightning checkpoint of the config's (freshly initialised) task."""
    cli = lightning_cli(["--config", str(config)], run=False)
    cli.trainer.strategy.connect(cli.model)
    cli.trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def segmentation(avsbench_trees, tmp_path_factory, one_thread) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("robust_seg")
    network = {"backbone": "test_resnet", "backbone_weights": None, "audio_width": 0.0625, "audio_weights": None}
    network["freeze_audio"] = False  # random VGGish weights: nothing to keep frozen
    data = {"image_size": 32, "batch_size": 2, "num_workers": 0}
    config = tiny_config(folder, "quickstart_tpavi_s4", avsbench_trees["s4"], {**network, "dim": 16}, {}, data)
    return config, save_checkpoint(config, folder / "tpavi.ckpt")


@pytest.fixture(scope="module")
def separation(music_tree, tmp_path_factory, one_thread) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("robust_sep")
    network = {**UNET, "backbone": "test_resnet", "backbone_weights": None}
    sop = tiny_config(folder, "quickstart_sop", music_tree, network, SEPARATION_TASK, SEPARATION_DATA)
    encoder = {"backbone": "test_resnet", "out_channels": 8, "output_stride": 16, "activation": "none", "weights": None}
    dgfnet = {**TINY_DGFNET, **UNET, "visual_dim": 8}
    config = yaml.safe_load((CONFIGS / "quickstart_dgfnet.yaml").read_text())
    visual = config["model"]["init_args"]["model"]["init_args"]["visual_encoder"]
    dgfnet["visual_encoder"] = {**visual, "init_args": {**visual["init_args"], **encoder}}
    dgf = tiny_config(folder, "quickstart_dgfnet", music_tree, dgfnet, SEPARATION_TASK, SEPARATION_DATA)
    return {
        "sop": (sop, save_checkpoint(sop, folder / "sop.ckpt")),
        "dgfnet": (dgf, save_checkpoint(dgf, folder / "dgfnet.ckpt")),
    }


@pytest.fixture(scope="module")
def segmentation_report(segmentation, tmp_path_factory) -> Path:
    config, ckpt = segmentation
    out = tmp_path_factory.mktemp("robust_seg_report") / "robustness"
    return run_robustness(config, ckpt, severities=[0, 1, 3], out=out, device="cpu")


@pytest.fixture(scope="module")
def separation_report(separation, tmp_path_factory) -> Path:
    (sop, sop_ckpt), (dgf, dgf_ckpt) = separation["sop"], separation["dgfnet"]
    out = tmp_path_factory.mktemp("robust_sep_report") / "robustness"
    return run_robustness([sop, dgf], [sop_ckpt, dgf_ckpt], severities=[0, 3], out=out, device="cpu")


# -- the corruptions ---------------------------------------------------------------------------------------


def at_snr(clean: torch.Tensor, noisy: torch.Tensor, snr: float, length: torch.Tensor | None = None) -> bool:
    """Whether every row of ``noisy`` is ``clean`` plus noise at ``snr`` dB, to 0.1 dB."""
    return bool(((measured_snr_db(clean, noisy, length) - snr).abs() <= 0.1).all())


def test_noise_is_at_the_asked_snr_over_the_valid_samples():
    generator = torch.Generator().manual_seed(0)
    waveform = torch.randn(3, 8000, generator=generator) * torch.tensor([[0.5], [0.01], [1.0]])
    length = torch.tensor([8000, 5000, 1234])
    waveform[1, 5000:] = 0.0
    waveform[2, 1234:] = 0.0
    for snr in (20.0, 10.0, 0.0):
        noisy = add_noise_at_snr(waveform, snr, length, generator)
        assert at_snr(waveform, noisy, snr, length)
        assert torch.equal(noisy[1, 5000:], waveform[1, 5000:]) and torch.equal(noisy[2, 1234:], waveform[2, 1234:])
    mixture = torch.randn(2, 4095, generator=generator)
    assert at_snr(mixture, add_noise_at_snr(mixture, 10.0), 10.0)
    assert torch.equal(add_noise_at_snr(torch.zeros(1, 100), 0.0), torch.zeros(1, 100))  # silence stays silent


def test_loudness_matched_noise_has_the_clips_rms_and_no_signal():
    generator = torch.Generator().manual_seed(1)
    waveform = torch.sin(torch.linspace(0, 600, 16000))[None].repeat(2, 1) * torch.tensor([[0.3], [0.05]])
    length = torch.tensor([16000, 9000])
    noise = loudness_matched_noise(waveform, length, generator)
    assert torch.allclose(signal_power(noise, length).sqrt(), signal_power(waveform, length).sqrt(), rtol=1e-6)
    assert torch.equal(noise[1, 9000:], torch.zeros(7000))
    assert abs(float(torch.corrcoef(torch.stack([noise[0], waveform[0]]))[0, 1])) < 0.05  # not the clip's audio


def test_occlusion_blanks_a_square_of_the_asked_side():
    frames = torch.rand(2, 3, 3, 32, 40, generator=torch.Generator().manual_seed(2))  # (clips, T, 3, H, W)
    for fraction in (0.25, 0.5, 0.75):
        out = occlude_frames(frames, fraction, torch.Generator().manual_seed(3))
        side = occlusion_side(frames, fraction)
        assert side == round(fraction * 32)
        changed = (out != frames).any(2)  # (clips, T, H, W)
        for clip in range(2):
            rows, cols = changed[clip, 0].nonzero(as_tuple=True)
            assert int(changed[clip, 0].sum()) == side * side
            assert int(rows.max() - rows.min()) + 1 == side and int(cols.max() - cols.min()) + 1 == side
            assert torch.equal(changed[clip], changed[clip, :1].expand_as(changed[clip]))  # the same in every frame
            assert torch.all(out[clip][:, :, changed[clip, 0]] == OCCLUSION_FILL)


def test_black_frames_are_zero_and_the_others_untouched():
    frames = torch.rand(2, 5, 3, 8, 8) + 0.01
    for fraction, expected in zip((1 / 3, 2 / 3, 1.0), (2, 4, 5), strict=True):
        out = black_frames(frames, fraction, torch.Generator().manual_seed(4))
        black = (out == 0).flatten(2).all(2)  # (clips, T)
        assert black.sum(1).tolist() == [expected, expected]
        assert torch.equal(out[~black], frames[~black])
    assert int((black_frames(torch.rand(1, 1, 3, 4, 4) + 0.01, 1 / 3) == 0).all()) == 1  # one-frame queries too


def test_blur_keeps_flat_frames_and_smooths_detail():
    flat = torch.full((1, 2, 3, 16, 16), 0.3)
    assert torch.allclose(blur_frames(flat, 1 / 28), flat)
    frames = torch.rand(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    variances = [float(blur_frames(frames, sigma).var()) for sigma in (1 / 112, 1 / 56, 1 / 28)]
    assert float(frames.var()) > variances[0] > variances[1] > variances[2]


def test_severity_tables():
    assert SEGMENTATION_CORRUPTIONS["audio_noise"].levels == (20.0, 10.0, 0.0)
    assert SEPARATION_CORRUPTIONS["mixture_noise"].level(3) == 0.0
    assert SEGMENTATION_CORRUPTIONS["negative_offscreen"].severities == (1,)
    assert all(len(s.levels) in (1, 3) for s in [*SEGMENTATION_CORRUPTIONS.values(), *SEPARATION_CORRUPTIONS.values()])


# -- the metrics -------------------------------------------------------------------------------------------


def test_fpr_and_the_harmonic_metric_match_a_hand_computation():
    logits = torch.full((1, 3, 4, 4), -5.0)  # one clip, 3 frames of 4×4
    logits[0, 0, :2, :2] = 3.0  # 4 of 16 pixels foreground
    logits[0, 1, :, :2] = 0.5  # 8 of 16
    logits[0, 2] = 9.0  # frame without ground truth: not evaluated
    valid = torch.tensor([[True, True, False]])
    rate = ForegroundRate()
    rate.update(logits, valid)
    assert rate.compute() == pytest.approx((4 / 16 + 8 / 16) / 2)  # 0.375
    # With empty ground truth, M_J is the fraction predicted background: 1 − FPR.
    metrics = BinarySegmentationMetrics()
    metrics.update(logits, torch.zeros(1, 3, 4, 4, dtype=torch.long), valid)
    assert float(metrics.compute()["mj"]) == pytest.approx(1 - 0.375)
    # Class maps: foreground = arg-max is not the background class 0.
    scores = torch.zeros(1, 1, 3, 2, 2)
    scores[0, 0, 2, 0, 0] = 1.0
    rate = ForegroundRate()
    rate.update(scores, torch.tensor([[True]]))
    assert rate.compute() == pytest.approx(0.25)
    # harmonic_mj = 2 · M_J · (1 − FPR) / (M_J + 1 − FPR), by hand with M_J = 0.6:
    assert harmonic_mean(0.6, 0.625) == pytest.approx(2 * 0.6 * 0.625 / 1.225)  # 0.612245
    scores_ = global_scores({"mj": 0.6, "mf": 0.8}, {"negative_silence": 0.375, "negative_noise": 0.125}, ("mj", "mf"))
    assert scores_["fpr_mean"] == pytest.approx(0.25)
    assert scores_["harmonic_mj"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)  # 0.666667
    assert scores_["harmonic_mf/negative_noise"] == pytest.approx(2 * 0.8 * 0.875 / 1.675)  # 0.835821
    assert harmonic_mean(0.0, 0.0) == 0.0 and math.isnan(harmonic_mean(math.nan, 0.5))


def test_energy_ratio_db():
    mixture = torch.randn(2, 1000)
    estimates = torch.stack([0.1 * mixture, torch.zeros_like(mixture)], 1)  # (2, N=2, L)
    energy = energy_ratio_db(estimates, mixture[:, None])
    assert torch.allclose(energy[:, 0], torch.tensor(-20.0, dtype=torch.float64), atol=1e-9)
    assert torch.all(energy[:, 1] == -120.0)


def test_donors():
    generator = torch.Generator().manual_seed(0)
    categories = {0: frozenset({1}), 1: frozenset({1}), 2: frozenset({2}), 3: frozenset({1, 3}), 4: frozenset({3})}
    donors, fallbacks = choose_offscreen_donors(categories, generator)
    assert fallbacks == 0 and all(not categories[i] & categories[j] and i != j for i, j in donors.items())
    unknown = {i: frozenset() for i in range(3)}  # MS3: no category per clip, any other clip
    assert all(i != j for i, j in choose_offscreen_donors(unknown, generator)[0].items())
    assert choose_offscreen_donors({0: frozenset({1}), 1: frozenset({1})}, generator) == ({0: 1, 1: 0}, 2)
    clip_labels = [0, 0, 1, 1, 2, 2]
    absent = choose_absent_donors({0: frozenset({0, 1}), 1: frozenset({1, 2})}, clip_labels, generator)
    assert clip_labels[absent[0]] == 2 and clip_labels[absent[1]] == 0
    assert choose_absent_donors({0: frozenset({0, 1, 2})}, clip_labels, generator) == {0: None}
    same, fallbacks = choose_same_class_donors({0: (0, 2), 1: (4, 1)}, clip_labels, generator)
    assert same == {0: 1, 1: 5} and fallbacks == 0
    assert choose_same_class_donors({0: (0, 2)}, [0, 1, 1], generator) == ({0: 0}, 1)


# -- the corruptions applied to real batches ---------------------------------------------------------------


def test_negative_audio_empties_the_ground_truth_and_offscreen_audio_comes_from_another_category(segmentation):
    _, datamodule = load_experiment(segmentation[0])
    datamodule.setup("test")
    dataset = datamodule.datasets["test"]
    categories = {i: frozenset({dataset.category_names.index(c.category)}) for i, c in enumerate(dataset.clips)}
    donors, _ = choose_offscreen_donors(categories, torch.Generator().manual_seed(0))
    batch = next(iter(datamodule.test_dataloader()))
    samples = list(range(batch[WAVEFORM].shape[0]))
    assert batch[MASKS].any()

    def read(index: int) -> tuple[torch.Tensor, int]:
        from avtoolkit.data.avsbench import read_clip_audio

        return read_clip_audio(dataset.clips[index], dataset.n_samples)

    for name in ("negative_silence", "negative_noise", "negative_offscreen"):
        out = apply_segmentation_audio(name, math.nan, batch, samples, torch.Generator(), read, donors)
        assert not out[MASKS].any() and torch.equal(out[MASK_VALID], batch[MASK_VALID])
        assert batch[MASKS].any()  # the input batch is left as it was
    silent = apply_segmentation_audio("negative_silence", math.nan, batch, samples, torch.Generator(), read, donors)
    assert not silent[WAVEFORM].any()
    noise = apply_segmentation_audio("negative_noise", math.nan, batch, samples, torch.Generator(), read, donors)
    length = batch[WAVEFORM_LENGTH]
    assert torch.allclose(signal_power(noise[WAVEFORM], length), signal_power(batch[WAVEFORM], length), rtol=1e-5)
    offscreen = apply_segmentation_audio("negative_offscreen", 0.0, batch, samples, torch.Generator(), read, donors)
    for b in samples:
        donor = donors[b]
        assert dataset.clips[donor].category != dataset.clips[b].category
        assert torch.equal(offscreen[WAVEFORM][b], read(donor)[0])
        assert int(offscreen[WAVEFORM_LENGTH][b]) == read(donor)[1]
    noisy = apply_segmentation_audio("audio_noise", 10.0, batch, samples, torch.Generator(), read, donors)
    assert at_snr(batch[WAVEFORM], noisy[WAVEFORM], 10.0, length)
    assert torch.equal(noisy[MASKS], batch[MASKS])


def test_query_swaps_put_an_absent_class_and_a_same_class_picture(separation):
    _, datamodule = load_experiment(separation["sop"][0])
    datamodule.setup("test")
    dataset = datamodule.datasets["test"]
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.test_dataloader())), 0)
    samples = list(range(batch[MIXTURE].shape[0]))
    clip_labels = [clip.label_index for clip in dataset.clips]
    recipes = {i: dataset.recipe(i).clips for i in samples}
    mixture_labels = {i: frozenset(clip_labels[c] for c in clips) for i, clips in recipes.items()}
    absent = choose_absent_donors(mixture_labels, clip_labels, torch.Generator().manual_seed(0))
    pictures = QueryPictures(dataset)
    out = apply_separation_case("absent_query", math.nan, batch, samples, torch.Generator(), pictures, absent)
    for b in samples:
        assert clip_labels[absent[b]] not in batch[LABELS][b].tolist()
        assert torch.equal(out[FRAMES][b, 0], pictures(absent[b], FRAMES, batch[FRAMES]))
        assert not torch.equal(out[FRAMES][b, 0], batch[FRAMES][b, 0])
        assert torch.equal(out[FRAMES][b, 1], batch[FRAMES][b, 1])
        assert torch.equal(pictures(recipes[b][0], FRAMES, batch[FRAMES]), batch[FRAMES][b, 0])  # as evaluated
    same, _ = choose_same_class_donors(recipes, clip_labels, torch.Generator().manual_seed(0))
    out = apply_separation_case("same_class_query", math.nan, batch, samples, torch.Generator(), pictures, same)
    for b in samples:
        assert clip_labels[same[b]] == int(batch[LABELS][b, 0])
        assert torch.equal(out[FRAMES][b, 1], pictures(same[b], FRAMES, batch[FRAMES]))
    noisy = apply_separation_case("mixture_noise", 0.0, batch, samples, torch.Generator(), None, {})
    assert at_snr(batch[MIXTURE], noisy[MIXTURE], 0.0)


# -- the suite and its report ------------------------------------------------------------------------------


def read_report(folder: Path) -> dict:
    for name in ["report.md", "metrics.json"]:
        assert (folder / name).is_file()
    payload = json.loads((folder / "metrics.json").read_text())
    pngs = sorted(folder.glob("*.png"))
    assert pngs and {p.name for p in pngs} >= {"single_level.png"}
    for png in pngs:
        with Image.open(png) as image:
            image.load()
            assert image.size[0] > 200 and image.size[1] > 100
    return payload


def assert_severity_zero_is_clean(checkpoint: dict) -> None:
    for name, by_severity in checkpoint["cases"].items():
        assert by_severity["0"] == checkpoint["clean"], name


def test_segmentation_report(segmentation_report):
    payload = read_report(segmentation_report)
    assert payload["task"] == "segmentation" and payload["severities"] == [0, 1, 3]
    assert set(payload["corruptions"]) == set(SEGMENTATION_CORRUPTIONS)
    (checkpoint,) = payload["checkpoints"].values()
    assert {"mj", "mf", "fpr", "n_frames"} <= set(checkpoint["clean"])
    assert_severity_zero_is_clean(checkpoint)
    assert set(checkpoint["cases"]["audio_noise"]) == {"0", "1", "3"}
    for name in ("negative_silence", "negative_noise", "negative_offscreen"):
        assert set(checkpoint["cases"][name]) == {"0", "1"}
        negative = checkpoint["cases"][name]["1"]
        assert negative["mj"] == pytest.approx(1 - negative["fpr"])  # empty ground truth
        assert negative["mf"] is None and negative["n_frames_f"] == 0
    fprs = [checkpoint["cases"][n]["1"]["fpr"] for n in ("negative_silence", "negative_noise", "negative_offscreen")]
    scores = checkpoint["global"]
    assert scores["fpr_mean"] == pytest.approx(sum(fprs) / 3)
    assert scores["harmonic_mj"] == pytest.approx(harmonic_mean(checkpoint["clean"]["mj"], 1 - sum(fprs) / 3))
    assert checkpoint["notes"]["n_offscreen_fallback"] == 0
    curves = {f"{name}.png" for name, spec in SEGMENTATION_CORRUPTIONS.items() if len(spec.levels) == 3}
    assert len(curves) == 5 and curves <= {p.name for p in segmentation_report.glob("*.png")}
    text = (segmentation_report / "report.md").read_text()
    assert "## Comparison" in text and "harmonic_mj" in text and "arXiv 2502.00358" in text


def test_separation_report_compares_models(separation_report):
    payload = read_report(separation_report)
    assert payload["task"] == "separation"
    assert set(payload["checkpoints"]) == {"sop", "dgfnet"}
    sop, dgfnet = payload["checkpoints"]["sop"], payload["checkpoints"]["dgfnet"]
    assert sop["model"] == "SoundOfPixels" and dgfnet["model"] == "DGFNet"
    for checkpoint in (sop, dgfnet):
        assert {"sdr", "sir", "sar", "sdri", "energy_db_1", "energy_db_2"} <= set(checkpoint["clean"])
        assert_severity_zero_is_clean(checkpoint)
        assert set(checkpoint["cases"]["mixture_noise"]) == {"0", "3"}
        assert set(checkpoint["cases"]["absent_query"]) == {"0", "1"}  # single-level: run as severity 1
        assert checkpoint["cases"]["absent_query"]["1"]["absent_energy_db"] is not None
        assert checkpoint["cases"]["query_noise"]["3"]["n_clips"] == checkpoint["clean"]["n_clips"] == 3
    assert "sigma_mean" in dgfnet["clean"] and "sigma_mean" in dgfnet["cases"]["query_noise"]["3"]
    assert "sigma_mean" not in sop["clean"]
    assert payload["metric_keys"][-1] == "sigma_mean"
    text = (separation_report / "report.md").read_text()
    assert "| case | severity | parameter | metric | sop | dgfnet |" in text
    assert "Absent-source query" in text


def test_the_command_writes_the_report_and_prints_its_path(segmentation, tmp_path, capsys):
    config, ckpt = segmentation
    out = tmp_path / "robustness"
    args = ["--experiment", str(config), "--ckpt_path", str(ckpt), "--corruptions", "[negative_silence]"]
    main(["robustness", *args, "--severities", "[1]", "--out", str(out), "--limit_batches", "1", "--device", "cpu"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"Report: {out / 'report.md'}"
    assert "negative_silence" in read_report(out)["checkpoints"][next(iter(read_report(out)["checkpoints"]))]["cases"]


def test_the_command_names_the_options_it_lacks(segmentation, capsys):
    config, _ = segmentation
    with pytest.raises(SystemExit):
        main(["robustness", "--experiment", str(config)])
    assert "avtoolkit robustness needs --ckpt_path: e.g." in capsys.readouterr().err
