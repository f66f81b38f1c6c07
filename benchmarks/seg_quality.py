"""FAVS's ablation ladder on the small synthetic S4 and MS3 data: the same step budget for every row.

Rows (the paper's Table 2 order, on the quick-start FAVS): the baseline (the same pipeline without FDED and SCMC) →
+FDED → +FDED+SCMC (full FAVS) → +SFM (ARS before the 8/16/32 transitions, MSAU at the output); on S4 also FAVS with
a fixed top-1 and top-2 instead of the entropy-guided k. Every row starts from the same pre-trained encoders (a
frozen VGGish trained to name the S4 training categories, ``avtoolkit pretrain vggish``, and a ResNet-18 trained to
name the objects of fresh synthetic pictures, ``avtoolkit pretrain backbone``: the stand-ins for the AudioSet and
ImageNet weights the papers start from), trains for the layout's step budget, keeps the checkpoint with the best
validation M_J and evaluates it on the test clips twice: as is, and with the audio deranged across the whole test
set (every clip hears another clip's audio, a seeded random derangement). On trees of the held-out-family protocol
(the quick starts' data) every row is evaluated on both test sets: the in-family clips and the held-out-family
clips (drawn and played by the families no row, nor the pre-trained encoders, trained on). The distractors are drawn
like the sounding objects but make no sound, so only a model that listens can tell them apart.

Per row: M_J, M_F, both with deranged audio, and for SCMC rows the routing on the clean test frames: mean k per stage
(visual stream / audio stream), the histogram of k, and each expert's share of the frames.

Targets: full FAVS ≥ baseline on S4 and on MS3 M_J; +SFM ≥ FAVS on M_F (boundaries); full FAVS's mean k < N_e on the
S4 test frames; held-out family: FAVS S4 M_J ≥ 0.5, and deranging the audio lowers it by ≥ 0.15. Prints the
tables, writes ``results.json`` into ``--workdir`` and exits non-zero when a target is missed. ``--reuse``
evaluates the checkpoints already in ``--workdir`` again.

    .venv/bin/python benchmarks/seg_quality.py [--runs baseline_s4,favs_s4,...] [--s4_steps 1050] [--ms3_steps 600]
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avtoolkit.analysis import derangement
from avtoolkit.data.batch import AUDIO, MASK_VALID, MASKS
from avtoolkit.data.datamodules import SegmentationDataModule, Split
from avtoolkit.fusion.scmc import SCMC, SCMCOutput
from avtoolkit.metrics import BinarySegmentationMetrics
from avtoolkit.tasks.segmentation import AVSegmentationTask
from budget import budgeted_run, quickstart_data

SFM = {"ars_stages": [8, 16, 32], "msau": True}
LADDER: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {  # name: (label, quick start, network
    "baseline": ("baseline", "quickstart_favs_baseline", {}, {}),  # changes, data changes)
    "fded": ("+FDED", "quickstart_favs", {"use_scmc": False}, {}),
    "favs": ("+FDED+SCMC (FAVS)", "quickstart_favs", {}, {}),
    "sfm": ("+SFM (ARS+MSAU)", "quickstart_favs", SFM, {}),
    "top1": ("FAVS, top-1", "quickstart_favs", {"top_k": 1}, {}),
    "top2": ("FAVS, top-2", "quickstart_favs", {"top_k": 2}, {}),
    # not a ladder row: FAVS trained with the negative-audio remedy (robustness suite), on demand
    "negative": ("FAVS, negative audio 0.2", "quickstart_favs", {}, {"negative_audio_ratio": 0.2}),
}
DEFAULT_RUNS = [f"{row}_s4" for row in LADDER if row != "negative"] + [
    f"{row}_ms3" for row in ("baseline", "fded", "favs", "sfm")
]


class RoutingStatistics:
    """Forward hooks on every SCMC of a network: k histograms and expert usage over the frames it saw."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.totals: dict[str, dict[str, Tensor]] = {}
        self.handles = [
            module.register_forward_hook(self._hook(name))
            for name, module in network.named_modules()
            if isinstance(module, SCMC)
        ]

    def _hook(self, name: str) -> Any:
        def record(module: torch.nn.Module, inputs: Any, output: SCMCOutput) -> None:
            frames = torch.tensor(float(output.k_visual.numel()))
            current = {
                "frames": frames,
                "k_histogram_visual": output.k_histogram_visual.double().cpu(),
                "k_histogram_audio": output.k_histogram_audio.double().cpu(),
                "usage_visual": output.usage_visual.double().cpu() * frames,
                "usage_audio": output.usage_audio.double().cpu() * frames,
            }
            total = self.totals.setdefault(name, {key: torch.zeros_like(value) for key, value in current.items()})
            for key, value in current.items():
                total[key] += value

        return record

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per SCMC module (stage): mean k, k histogram (fractions of frames) and usage, per stream."""
        out = {}
        for name, total in self.totals.items():
            frames = float(total["frames"])
            stage: dict[str, Any] = {}
            for stream in ("visual", "audio"):
                histogram = total[f"k_histogram_{stream}"] / frames
                stage[stream] = {
                    "mean_k": float((histogram * torch.arange(len(histogram))).sum()),
                    "k_histogram": [round(float(h), 4) for h in histogram],
                    "usage": [round(float(u) / frames, 4) for u in total[f"usage_{stream}"]],
                }
            out[name] = stage
        return out

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def evaluate(task: AVSegmentationTask, datamodule: SegmentationDataModule, test_set: Split) -> dict[str, Any]:
    """M_J / M_F on a test set as is and with the audio deranged across the whole set; routing statistics."""
    task.eval()

    def batches() -> Any:
        for batch in datamodule.dataloader(test_set):
            yield datamodule.on_after_batch_transfer({k: v.to(task.device) for k, v in batch.items()}, 0)

    clean, routing = BinarySegmentationMetrics(), RoutingStatistics(task.model)
    bank = []
    for batch in batches():
        scores = task.scores(task(batch), tuple(batch[MASKS].shape[-2:]))
        clean.update(scores[:, :, 0], batch[MASKS], batch[MASK_VALID])
        bank.append(batch[AUDIO].cpu())
    routing.remove()
    audio = torch.cat(bank)
    donor = derangement(len(audio), torch.Generator().manual_seed(0))  # clip i hears clip donor[i]
    deranged, start = BinarySegmentationMetrics(), 0
    for batch in batches():
        n = batch[AUDIO].shape[0]
        batch[AUDIO] = audio[donor[start : start + n]].to(task.device)
        start += n
        scores = task.scores(task(batch), tuple(batch[MASKS].shape[-2:]))
        deranged.update(scores[:, :, 0], batch[MASKS], batch[MASK_VALID])
    result = {k: float(v) for k, v in clean.compute().items()}
    result.update({f"{k}_deranged": float(v) for k, v in deranged.compute().items() if k in ("mj", "mf")})
    result["routing"] = routing.summary()
    return result


def run(name: str, steps: int, workdir: Path, reuse: bool) -> dict[str, Any]:
    """Train ladder row ``name`` (``<row>_<layout>``) for ``steps`` (unless reusing); evaluate its best checkpoint."""
    row, layout = name.rsplit("_", 1)
    _, quickstart, changes, data_changes = LADDER[row]

    def edit(config: dict[str, Any]) -> None:
        config["model"]["init_args"]["model"]["init_args"].update(changes)
        config["data"]["init_args"].update(data_changes)

    task, datamodule, checkpoint = budgeted_run(
        f"{quickstart}_{layout}", name, None, workdir, reuse, edit=edit, steps=steps
    )
    assert isinstance(task, AVSegmentationTask) and isinstance(datamodule, SegmentationDataModule)
    datamodule.setup("test")
    results = {"step": checkpoint["global_step"], **evaluate(task, datamodule, "test")}
    if "test_held_out" in datamodule.test_sets:
        results["held_out"] = evaluate(task, datamodule, "test_held_out")
    return results


def print_tables(results: dict[str, dict[str, Any]], budgets: dict[str, int]) -> None:
    for layout in ("s4", "ms3"):
        rows = {name: r for name, r in results.items() if name.endswith(f"_{layout}")}
        if not rows:
            continue
        print(f"\n{layout.upper()}: {budgets[layout]} steps each, best validation checkpoint, test clips")
        print(
            f"| {'row':<20} | test set | step |  M_J  |  M_F  | M_J deranged | Δ M_J | M_F deranged | "
            "mean k per stage (visual / audio) |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---|")
        for name, row in rows.items():
            label = LADDER[name.rsplit("_", 1)[0]][0]
            sets = {"in-family": row, "held-out family": row.get("held_out")}
            for test_set, r in sets.items():
                if r is None:
                    continue
                ks = " · ".join(
                    f"{s['visual']['mean_k']:.2f}/{s['audio']['mean_k']:.2f}" for s in r["routing"].values()
                )
                print(
                    f"| {label:<20} | {test_set} | {row['step']:>4} | {r['mj']:.3f} | {r['mf']:.3f} | "
                    f"{r['mj_deranged']:>12.3f} | {r['mj'] - r['mj_deranged']:>5.3f} | {r['mf_deranged']:>12.3f} | "
                    f"{ks or '—'} |"
                )
        for name, r in rows.items():
            for stage, stats in r["routing"].items():
                for stream in ("visual", "audio"):
                    s = stats[stream]
                    print(
                        f"  {name} {stage} {stream}: k histogram (k = 0..N_e) {s['k_histogram']}, "
                        f"expert usage {s['usage']}"
                    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=",".join(DEFAULT_RUNS), help="comma-separated <row>_<layout> names")
    parser.add_argument("--s4_steps", type=int, default=1050, help="optimiser steps of every S4 row (7 epochs)")
    parser.add_argument("--ms3_steps", type=int, default=600, help="optimiser steps of every MS3 row (24 epochs)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/seg_quality"), help="logs and checkpoints")
    parser.add_argument("--reuse", action="store_true", help="evaluate the best checkpoints already in --workdir")
    args = parser.parse_args()
    names = args.runs.split(",")
    unknown = [n for n in names if n.rsplit("_", 1)[0] not in LADDER or n.rsplit("_", 1)[-1] not in ("s4", "ms3")]
    if unknown:
        parser.error(f"--runs: unknown rows {unknown}; choose <row>_<layout> with row in {list(LADDER)}, s4 or ms3")
    budgets = {"s4": args.s4_steps, "ms3": args.ms3_steps}
    for layout in sorted({name.rsplit("_", 1)[1] for name in names}):
        quickstart_data(layout)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results_path = args.workdir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in names:
        results[name] = run(name, budgets[name.rsplit("_", 1)[1]], args.workdir, args.reuse)
        results_path.write_text(json.dumps(results, indent=1))  # after every row: a long run keeps what it has
    results = {name: results[name] for name in names}
    print_tables(results, budgets)

    checks = []
    for layout in ("s4", "ms3"):
        favs, baseline = results.get(f"favs_{layout}"), results.get(f"baseline_{layout}")
        if favs and baseline:
            checks.append((f"{layout.upper()}: FAVS M_J >= baseline M_J", favs["mj"] >= baseline["mj"]))
        sfm = results.get(f"sfm_{layout}")
        if sfm and favs:
            checks.append((f"{layout.upper()}: +SFM M_F >= FAVS M_F", sfm["mf"] >= favs["mf"]))
    if "favs_s4" in results:
        routing = results["favs_s4"]["routing"].values()
        experts = len(next(iter(routing))["visual"]["usage"])
        dynamic = all(s[stream]["mean_k"] < experts for s in routing for stream in ("visual", "audio"))
        checks.append((f"S4: FAVS mean k < N_e = {experts} in every stage and stream", dynamic))
        held = results["favs_s4"].get("held_out")
        if held is not None:
            checks.append(("S4: FAVS held-out family M_J >= 0.5", held["mj"] >= 0.5))
            drop = held["mj"] - held["mj_deranged"]
            checks.append(("S4: FAVS held-out family, deranging the audio lowers M_J by >= 0.15", drop >= 0.15))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
