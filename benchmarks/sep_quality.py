"""Learning evidence for the separation models: a fixed CPU budget each, on the small synthetic MUSIC-layout data.

Trains the quick-start configuration of each model (Sound of Pixels, CLIPSep late fusion, HFRA and its late-only
ablation row, DGFNet; every one from the pre-trained ResNet-18 backbone) for the same wall-clock budget (embedding
caches are filled first and timed separately), keeps the checkpoint with the best validation SDR, and evaluates it
on each test set (the quick starts' tree follows the held-out-family protocol: in-family test mixtures, rendered
like the training clips, and held-out-family ones, drawn and played by families no model trained on) three times:
as is; with the visual inputs shuffled across the set (each mixture gets another mixture's pictures); and with the
two pictures of each mixture swapped (scored against the references in their original order). A model that uses
vision must lose SDR when its pictures are wrong, and its estimates must follow the pictures when they are swapped.

Targets (in-family): HFRA SDRi ≥ 6 dB; shuffling costs every model ≥ 3 dB SDR; HFRA ≥ its late-only variant (same
visual encoder, data and budget; middle fusion and alignment off). Held-out family: Sound of Pixels and HFRA
SDRi ≥ 3 dB, and swapping the pictures costs each ≥ 3 dB.
Prints a table (``step``: the training step of the evaluated checkpoint) and exits non-zero when a target is
missed. Then the papers' analyses of the trained models: per-class SDR by model and test set, DGFNet's gate under
corrupted vision, HFRA's linear probe and modality gap, and the acoustic descriptors of the test instruments.
Checkpoints stay in ``--workdir``; ``--reuse`` evaluates them again without training.

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
from budget import budgeted_run, quickstart_data

MODELS = {
    "sop": "Sound of Pixels",
    "clipsep": "CLIPSep (late)",
    "hfra_late": "HFRA late-only",
    "hfra": "HFRA",
    "dgfnet": "DGFNet",
    "sop_absent": "Sound of Pixels, absent-source queries 0.2",
}
DEFAULT_MODELS = "sop,clipsep,hfra_late,hfra,dgfnet"
SET_NAMES = {"test": "in-family", "test_held_out": "held-out family"}
# Runs that are a quick start with some model or data arguments changed: HFRA's late-only ablation row is HFRA with
# the middle fusion and the alignment switched off (same visual encoder, data and budget as HFRA); Sound of Pixels
# trained with the absent-source remedy (a fifth of the training mixtures query a picture of an absent class).
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "hfra_late": ("hfra", {"middle": False, "align_weight": 0.0}, {}),
    "sop_absent": ("sop", {}, {"absent_source_ratio": 0.2}),
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


class PicturesFrom(Dataset):
    """Each sample with every source's pictures replaced by those of a same-class sample of another set.

    On the held-out-family test set with pictures from the in-family set, only the sounds are new to the model; on
    the in-family set with the held-out set's pictures, only the pictures are: which side fails to generalise.
    The first source of each class in ``donors`` gives that class's pictures; a class ``donors`` lacks keeps its own.
    """

    def __init__(self, base: Dataset, donors: Dataset) -> None:
        self.base = base
        self.bank: dict[int, torch.Tensor] = {}
        for index in range(len(donors)):  # type: ignore[arg-type]
            sample = donors[index]
            for k, label in enumerate(sample[LABELS].tolist()):
                self.bank.setdefault(label, sample[FRAMES][k])

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = dict(self.base[index])
        frames = sample[FRAMES].clone()
        for k, label in enumerate(sample[LABELS].tolist()):
            if label in self.bank:
                frames[k] = self.bank[label]
        sample[FRAMES] = frames
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
    base, model_overrides, data_overrides = VARIANTS.get(name, (name, {}, {}))
    cache_minutes = 0.0

    def edit(config: dict[str, Any]) -> None:
        config["model"]["init_args"]["model"]["init_args"].update(model_overrides)
        callbacks = config["trainer"]["callbacks"]
        config["trainer"]["callbacks"] = [c for c in callbacks if "SeparationReport" not in c["class_path"]]
        config["data"]["init_args"].update(data_overrides, root=str(root))
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
    results: dict[str, Any] = {
        "cache_min": cache_minutes,
        "steps": float(checkpoint["global_step"]),
        "task": task,
        "datamodule": datamodule,
    }
    for test_set in datamodule.test_sets:  # in-family, then held-out-family mixtures
        test = datamodule.datasets[test_set]
        prepared = batches(task, datamodule, test)
        clean = evaluate(task, prepared)
        shuffled = evaluate(task, batches(task, datamodule, ShuffledVisuals(test)))
        swapped = evaluate(task, batches(task, datamodule, SwappedVisuals(test)))
        results[test_set] = {
            **{k: float(v) for k, v in clean.compute().items()},
            "sdr_shuffled": float(shuffled.compute()["sdr"]),
            "sdr_swapped": float(swapped.compute()["sdr"]),
            "per_clip": clean.per_clip(),
            "batches": prepared,
        }
    if len(datamodule.test_sets) == 2:  # swap the pictures between the sets: which side fails to generalise
        in_family, held_out = (datamodule.datasets[name] for name in datamodule.test_sets)
        for name, base, donors in (("test", in_family, held_out), ("test_held_out", held_out, in_family)):
            crossed = evaluate(task, batches(task, datamodule, PicturesFrom(base, donors)))
            results[name]["sdr_crossed"] = float(crossed.compute()["sdr"])
    return results


def analyses(results: dict[str, dict[str, Any]]) -> str:
    """The papers' analyses of the trained models, as markdown."""
    any_run = next(iter(results.values()))
    class_names = list(any_run["datamodule"].class_names)
    sections = []
    for test_set in any_run["datamodule"].test_sets:
        sections += [
            f"## Per-class SDR (dB), {SET_NAMES[test_set]} test mixtures",
            compare_models(
                {MODELS[n]: per_class_sdr(r[test_set]["per_clip"], class_names) for n, r in results.items()}
            ),
        ]
    if "dgfnet" in results:
        run = results["dgfnet"]
        stats = gate_stress_test(run["task"], run["test"]["batches"])
        sections += ["## DGFNet gate σ, clean vs corrupted visual input (test mixtures)"]
        for kind in ("noise", "shuffle"):
            sections.append(compare_gates(stats["clean"], stats[kind], names=("clean", kind), class_names=class_names))
    if "hfra" in results:
        run = results["hfra"]
        reps = source_representations(run["task"], run["test"]["batches"])
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
    quickstart_data("music")  # the quick starts' tree and backbone weights (a no-op when present)
    names = args.models.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {name: run(name, args.minutes, args.root, args.workdir, args.batch_size, args.reuse) for name in names}

    print(f"\nseparation quality, {args.minutes:g} min training each on {args.root} (test mixtures)")
    print(
        "| model | test set | cache | step | SDR | SIR | SAR | SDRi | SDR, pictures of another mixture | Δ | "
        "SDR, a mixture's pictures swapped | Δ |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, run_results in results.items():
        for test_set in run_results["datamodule"].test_sets:
            r = run_results[test_set]
            print(
                f"| {MODELS[name]} | {SET_NAMES[test_set]} | {run_results['cache_min']:.1f} min | "
                f"{int(run_results['steps'])} | {r['sdr']:.2f} | {r['sir']:.2f} | {r['sar']:.2f} | {r['sdri']:.2f} | "
                f"{r['sdr_shuffled']:.2f} | {r['sdr'] - r['sdr_shuffled']:.2f} | {r['sdr_swapped']:.2f} | "
                f"{r['sdr'] - r['sdr_swapped']:.2f} |"
            )
    if any("sdr_crossed" in r["test"] for r in results.values()):
        print(
            "\nWhich side generalises: SDR (dB) of each set as is, and with the pictures of the other set's clips of "
            "the same classes (so only the sounds, or only the pictures, come from the held-out families)"
        )
        print(
            "| model | both in-family | held-out pictures, in-family sounds | in-family pictures, held-out sounds | "
            "both held-out |"
        )
        print("|---|---:|---:|---:|---:|")
        for name, r in results.items():
            if "sdr_crossed" in r["test"]:
                print(
                    f"| {MODELS[name]} | {r['test']['sdr']:.2f} | {r['test']['sdr_crossed']:.2f} | "
                    f"{r['test_held_out']['sdr_crossed']:.2f} | {r['test_held_out']['sdr']:.2f} |"
                )
    checks = [
        (f"{MODELS[n]}: shuffling the pictures costs >= 3 dB", r["test"]["sdr"] - r["test"]["sdr_shuffled"] >= 3.0)
        for n, r in results.items()
    ]
    if "hfra" in results:
        checks.append(("HFRA SDRi >= 6 dB", results["hfra"]["test"]["sdri"] >= 6.0))
        if "hfra_late" in results:
            better = results["hfra"]["test"]["sdri"] >= results["hfra_late"]["test"]["sdri"]
            checks.append(("HFRA >= its late-only variant", better))
    for name in ("sop", "hfra"):
        held = results.get(name, {}).get("test_held_out")
        if held is not None:
            checks.append((f"{MODELS[name]}, held-out family: SDRi >= 3 dB", held["sdri"] >= 3.0))
            swap_cost = held["sdr"] - held["sdr_swapped"]
            checks.append((f"{MODELS[name]}, held-out family: swapping the pictures costs >= 3 dB", swap_cost >= 3.0))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print()
    print(analyses(results))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
