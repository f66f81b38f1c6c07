"""Training throughput of the headline models under each speed switch: samples/s, step time, and MFU on a GPU.

Each (model, switch) pair is built from its experiment config plus the switch's overlay (configs/trainer/
bf16.yaml, channels_last.yaml, compile.yaml: the files users stack on their runs) and trained through Lightning
on a few batches read once and kept in memory, so the data pipeline is not measured — only the training step
(forward, loss, backward, optimiser). The first ``--warmup`` steps (compilation, allocator warm-up) are not
timed, nor the next one, whose FLOPs are counted (torch's FlopCounterMode). MFU = FLOPs / step time / the
device's peak for the step's dtype (Lightning's table of GPU peaks; none on CPUs, so no MFU there).

    python benchmarks/throughput.py                       # quick-start models (what runs on a laptop CPU)
    python benchmarks/throughput.py --scale paper         # the papers' networks (Swin-B FAVS, ...), for GPUs

Targets (exit status 1 when missed): every pair trains to finite losses; on a GPU, bf16 mixed precision is
faster than float32 for every model.
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from avtoolkit.cli import lightning_cli
from budget import quickstart_data

CONFIGS = Path(__file__).parents[1] / "configs"

# model → (experiment config, synthetic layout its data comes from)
SCALES: dict[str, dict[str, tuple[str, str]]] = {
    "quickstart": {
        "FAVS": ("quickstart_favs_s4", "s4"),
        "HFRA": ("quickstart_hfra", "music"),
        "DGFNet": ("quickstart_dgfnet", "music"),
    },
    "paper": {
        "FAVS": ("favs_s4_224", "s4"),
        "HFRA": ("hfra_music", "music"),
        "DGFNet": ("dgfnet_music", "music"),
    },
}
SWITCHES = {"fp32": [], "bf16": ["bf16"], "channels-last": ["channels_last"], "compile": ["compile"]}
SWITCHES["bf16+channels-last+compile"] = ["bf16", "channels_last", "compile"]


class StepTimer(Callback):
    """Counts the FLOPs of the step after the ``warmup`` steps, then times each later step (device synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.times: list[float] = []
        self.losses: list[float] = []
        self.flops = 0
        self._start = 0.0
        self._counter: FlopCounterMode | None = None

    def _sync(self, pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """Start the clock (and, on the step after the warm-up, the FLOP counter)."""
        if batch_idx == self.warmup:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Stop the clock; keep the time of a timed step, the FLOPs of the counted one, and the loss."""
        self._sync(pl_module)
        elapsed = time.perf_counter() - self._start
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = self._counter.get_total_flops()
            self._counter = None
        elif batch_idx > self.warmup:
            self.times.append(elapsed)
        self.losses.append(float(outputs["loss"]))


def measure(config: str, layout: str, overlays: list[str], steps: int, warmup: int, batch_size: int | None) -> dict:
    """Train ``steps`` in-memory batches with the overlays; time, FLOPs and losses."""
    root = quickstart_data(layout)
    n_batches = warmup + 1 + steps  # + the FLOP-counted step
    # The experiment's trainer, stripped of its callbacks (checkpoints, reports) before the overlays add theirs.
    args = ["--config", str(CONFIGS / "experiment" / f"{config}.yaml"), "--trainer.callbacks=[]"]
    args += [arg for overlay in overlays for arg in ("--config", str(CONFIGS / "trainer" / f"{overlay}.yaml"))]
    args += [
        f"--trainer.max_steps={n_batches}",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--data.init_args.root={root}",
        "--data.init_args.num_workers=0",
    ]
    if batch_size is not None:
        args.append(f"--data.init_args.batch_size={batch_size}")
    cli = lightning_cli(args, run=False)
    task, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    batches = [datamodule.on_after_batch_transfer(next(loader), 0) for _ in range(min(steps, 4))]
    batches = [batches[i % len(batches)] for i in range(n_batches)]
    timer = StepTimer(warmup)
    trainer.callbacks.append(timer)
    trainer.fit(task, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch))
    step = statistics.median(timer.times)
    samples = len(next(iter(batches[0].values())))
    device = trainer.strategy.root_device
    dtype = torch.bfloat16 if "bf16" in overlays else torch.float32
    peak = get_available_flops(device, dtype) if device.type == "cuda" else None
    return {
        "step_s": step,
        "samples_per_s": samples / step,
        "batch": samples,
        "gflop": timer.flops / 1e9,
        "mfu": timer.flops / step / peak if peak else None,
        "finite": all(math.isfinite(loss) for loss in timer.losses),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="quickstart")
    parser.add_argument("--models", default=None, help="comma-separated subset of FAVS,HFRA,DGFNet")
    parser.add_argument("--switches", default=None, help="comma-separated subset of " + ",".join(SWITCHES))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per pair")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the configs' batch size")
    args = parser.parse_args()
    models = SCALES[args.scale]
    chosen_models = args.models.split(",") if args.models else list(models)
    chosen_switches = args.switches.split(",") if args.switches else list(SWITCHES)
    rows, missed = [], []
    for model in chosen_models:
        config, layout = models[model]
        for switch in chosen_switches:
            result = measure(config, layout, SWITCHES[switch], args.steps, args.warmup, args.batch_size)
            rows.append((model, switch, result))
            print(f"{model} {switch}: {1000 * result['step_s']:.0f} ms/step", file=sys.stderr, flush=True)
            if not result["finite"]:
                missed.append(f"{model} {switch}: non-finite loss")
    device = rows[0][2]["device"] if rows else "?"
    print(
        f"\nTraining throughput, {args.scale} models, on {device} ({torch.get_num_threads()} CPU threads), "
        f"median of {args.steps} steps after {args.warmup} warm-up steps, data in memory\n"
    )
    print("| model | switch | batch | step (ms) | samples/s | GFLOP/step | MFU |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model, switch, r in rows:
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "–"
        print(
            f"| {model} | {switch} | {r['batch']} | {1000 * r['step_s']:.0f} | {r['samples_per_s']:.1f} | "
            f"{r['gflop']:.1f} | {mfu} |"
        )
    if device != "CPU":
        by_pair = {(model, switch): r for model, switch, r in rows}
        for model in chosen_models:
            fp32, bf16 = by_pair.get((model, "fp32")), by_pair.get((model, "bf16"))
            if fp32 and bf16 and bf16["step_s"] >= fp32["step_s"]:
                missed.append(
                    f"{model}: bf16 ({1000 * bf16['step_s']:.0f} ms) not faster than fp32 "
                    f"({1000 * fp32['step_s']:.0f} ms)"
                )
    for miss in missed:
        print(f"MISSED: {miss}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
