"""Learning evidence for the separation models: a fixed CPU budget each, on the small synthetic MUSIC-layout data.

Trains the quick-start configuration of each model (Sound of Pixels, CLIPSep late fusion, HFRA and its late-only
ablation row, DGFNet) for the same wall-clock budget (embedding caches are filled first and timed separately),
keeps the checkpoint with the best validation SDR, and evaluates it on the held-out test mixtures three times: as
is; with the visual inputs shuffled across the test set (each mixture gets another mixture's pictures); and with
the two pictures of each mixture swapped (scored against the references in their original order). A model that
uses vision must lose SDR when its pictures are wrong, and its estimates must follow the pictures when they are
swapped.

Targets: HFRA SDRi ≥ 6 dB; shuffling costs every model ≥ 3 dB SDR; HFRA ≥ its late-only variant (same visual
encoder, data and budget; middle fusion and alignment off).
Prints a table (``step``: the training step of the evaluated checkpoint) and exits non-zero when a target is
missed. Then the papers' analyses of the trained models: per-class SDR by model, DGFNet's gate under corrupted
vision, HFRA's linear probe and modality gap, and the acoustic descriptors of the test instruments. Checkpoints
stay in ``--workdir``; ``--reuse`` evaluates them again without training.

    .venv/bin/python benchmarks/sep_quality.py [--minutes 7] [--models sop,clipsep,hfra_late,hfra,dgfnet]
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from avtoolkit.analysis import (
    compare_gates,
    compare_models,
    derangement,
    descriptor_table,
    format_table,
    linear_probe,
    modality_gap,
    per_class_sdr,
)
from avtoolkit.analysis.models import gate_stress_test, source_representations
from avtoolkit.data.audio import read_audio
from avtoolkit.data.batch import FRAMES, LABELS, MIXTURE, SOURCES, VISUAL_EMB
from avtoolkit.data.datamodules import SeparationDataModule
from avtoolkit.data.music import read_split
from avtoolkit.metrics import SeparationMetrics
from avtoolkit.tasks.separation import AVSeparationTask
from budget import budgeted_run

MODELS = {
    "sop": "Sound of Pixels",
    "clipsep": "CLIPSep (late)",
    "clipsep_raw": "CLIPSep, raw emb.",
    "hfra_late": "HFRA late-only",
    "hfra": "HFRA",
    "dgfnet": "DGFNet",
}
DEFAULT_MODELS = "sop,clipsep,clipsep_raw,hfra_late,hfra,dgfnet"
# Runs that are a quick start with some model arguments changed: HFRA's late-only ablation row is HFRA with the
# middle fusion and the alignment switched off (same visual encoder, data and budget as HFRA); CLIPSep on its
# frozen CLIP embeddings as they are, without the training-set standardisation of its quick start.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hfra_late": ("hfra", {"middle": False, "align_weight": 0.0}),
    "clipsep_raw": ("clipsep", {"standardize_visual": False}),
}


class ShuffledVisuals(Dataset):
    """Each sample with the pictures (frames or embeddings) of another sample, by a seeded random derangement.

    Random, not "the next sample": the split's clips are listed class by class, so a neighbour's pictures would
    mostly show the same instruments and hide how much a model relies on them.
    """

    def __init__(self, base: Dataset, seed: int = 0) -> None:
        self.base = base
        self.donor = derangement(len(self), torch.Generator().manual_seed(seed)).tolist()

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = dict(self.base[index])
        other = self.base[self.donor[index]]
        for key in (FRAMES, VISUAL_EMB):
            if key in sample:
                sample[key] = other[key]
        return sample


class SwappedVisuals(Dataset):
    """Each sample with the pictures of its sources in reverse order (the two pictures of a mixture swapped)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = dict(self.base[index])
        for key in (FRAMES, VISUAL_EMB):
            if key in sample:
                sample[key] = sample[key].flip(0)
        return sample


def batches(
    task: AVSeparationTask, datamodule: SeparationDataModule, dataset: Dataset
) -> list[dict[str, torch.Tensor]]:
    """The dataset's batches, on the task's device and prepared as in training."""
    loader = DataLoader(dataset, batch_size=datamodule.batch_size, num_workers=datamodule.num_workers)
    return [datamodule.on_after_batch_transfer({k: v.to(task.device) for k, v in b.items()}, 0) for b in loader]


@torch.no_grad()
def evaluate(task: AVSeparationTask, prepared: list[dict[str, torch.Tensor]]) -> SeparationMetrics:
    """SDR/SIR/SAR/SDRi of ``task`` over prepared batches (fast BSS Eval path, ~1e-8 dB from mir_eval)."""
    task.eval()
    metrics = SeparationMetrics(backend="fast")
    for batch in prepared:
        metrics.update(task(batch), batch[SOURCES], batch[MIXTURE], batch[LABELS])
    return metrics


def run(name: str, minutes: float, root: Path, workdir: Path, batch_size: int | None, reuse: bool) -> dict[str, Any]:
    """Fill caches, train ``name``'s quick start for ``minutes``, evaluate the best-validation checkpoint.

    With ``reuse``, a best checkpoint already in ``workdir`` (from an earlier run of the same budget) is
    evaluated instead of training again.
    """
    base, model_overrides = VARIANTS.get(name, (name, {}))
    cache_minutes = 0.0

    def edit(config: dict[str, Any]) -> None:
        config["model"]["init_args"]["model"]["init_args"].update(model_overrides)
        callbacks = config["trainer"]["callbacks"]
        config["trainer"]["callbacks"] = [c for c in callbacks if "SeparationReport" not in c["class_path"]]
        config["data"]["init_args"]["root"] = str(root)
        if batch_size is not None:
            config["data"]["init_args"]["batch_size"] = batch_size

    def fill_caches(task: Any, datamodule: Any) -> None:
        nonlocal cache_minutes
        start = time.perf_counter()
        datamodule.prepare_data()
        cache_minutes = (time.perf_counter() - start) / 60

    task, datamodule, checkpoint = budgeted_run(f"quickstart_{base}", name, minutes, workdir, reuse, edit, fill_caches)
    assert isinstance(task, AVSeparationTask) and isinstance(datamodule, SeparationDataModule)
    datamodule.setup("test")
    test = datamodule.datasets["test"]
    prepared = batches(task, datamodule, test)
    clean = evaluate(task, prepared)
    shuffled = evaluate(task, batches(task, datamodule, ShuffledVisuals(test)))
    swapped = evaluate(task, batches(task, datamodule, SwappedVisuals(test)))
    return {
        "cache_min": cache_minutes,
        "steps": float(checkpoint["global_step"]),
        **{k: float(v) for k, v in clean.compute().items()},
        "sdr_shuffled": float(shuffled.compute()["sdr"]),
        "sdr_swapped": float(swapped.compute()["sdr"]),
        "per_clip": clean.per_clip(),
        "task": task,
        "datamodule": datamodule,
        "batches": prepared,
    }


def analyses(results: dict[str, dict[str, Any]]) -> str:
    """The papers' analyses of the trained models, as markdown."""
    any_run = next(iter(results.values()))
    class_names = list(any_run["datamodule"].class_names)
    sections = [
        "## Per-class SDR (dB)",
        compare_models({MODELS[n]: per_class_sdr(r["per_clip"], class_names) for n, r in results.items()}),
    ]
    if "dgfnet" in results:
        run = results["dgfnet"]
        stats = gate_stress_test(run["task"], run["batches"])
        sections += ["## DGFNet gate σ, clean vs corrupted visual input (test mixtures)"]
        for kind in ("noise", "shuffle"):
            sections.append(compare_gates(stats["clean"], stats[kind], names=("clean", kind), class_names=class_names))
    if "hfra" in results:
        run = results["hfra"]
        reps = source_representations(run["task"], run["batches"])
        probe = linear_probe(reps["bottleneck"], reps["labels"])
        sections += [
            "## HFRA representations (test sources, each alone)",
            f"- linear probe of the pooled bottleneck: test accuracy {probe.test_accuracy:.2f} "
            f"(train {probe.train_accuracy:.2f}, chance {probe.chance:.2f}, {probe.n_classes} classes)",
        ]
        if "audio" in reps:
            gap = modality_gap(reps["audio"], reps["visual"])
            sections.append(f"- modality gap between aligned audio features and visual embeddings: {gap:.3f}")
    datamodule = any_run["datamodule"]
    by_class: dict[str, list[torch.Tensor]] = {}
    for clip in read_split(datamodule.root, "test", datamodule.sample_rate):
        by_class.setdefault(clip.label, []).append(read_audio(clip.audio, clip.sample_rate))
    sections += [
        "## Acoustic descriptors of the test instruments",
        format_table(descriptor_table(by_class, datamodule.sample_rate)),
    ]
    return "\n\n".join(sections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=7.0, help="training budget per model (wall clock)")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--root", type=Path, default=Path("data/synthetic/music"))
    parser.add_argument("--batch-size", type=int, default=None, help="override the configs' batch size")
    parser.add_argument("--workdir", type=Path, default=Path("runs/sep_quality"), help="logs and checkpoints")
    parser.add_argument("--reuse", action="store_true", help="evaluate the best checkpoints already in --workdir")
    args = parser.parse_args()
    if not (args.root / "train.csv").is_file():
        from avtoolkit.data.synth import generate

        generate("music", args.root, "small")
    names = args.models.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {name: run(name, args.minutes, args.root, args.workdir, args.batch_size, args.reuse) for name in names}

    print(f"\nseparation quality, {args.minutes:g} min training each on {args.root} (held-out test mixtures)")
    print(
        "| model | cache | step | SDR | SIR | SAR | SDRi | SDR, pictures of another mixture | Δ | "
        "SDR, a mixture's pictures swapped | Δ |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {MODELS[name]} | {r['cache_min']:.1f} min | {int(r['steps'])} | {r['sdr']:.2f} | {r['sir']:.2f} | "
            f"{r['sar']:.2f} | {r['sdri']:.2f} | {r['sdr_shuffled']:.2f} | {r['sdr'] - r['sdr_shuffled']:.2f} | "
            f"{r['sdr_swapped']:.2f} | {r['sdr'] - r['sdr_swapped']:.2f} |"
        )
    checks = [
        (f"{MODELS[n]}: shuffling the pictures costs >= 3 dB", r["sdr"] - r["sdr_shuffled"] >= 3.0)
        for n, r in results.items()
    ]
    if "hfra" in results:
        checks.append(("HFRA SDRi >= 6 dB", results["hfra"]["sdri"] >= 6.0))
        if "hfra_late" in results:
            checks.append(("HFRA >= its late-only variant", results["hfra"]["sdri"] >= results["hfra_late"]["sdri"]))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print()
    print(analyses(results))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
