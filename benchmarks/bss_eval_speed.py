"""Speed and accuracy of the BSS Eval fast path against mir_eval on real instrument audio.

Renders 2-source clips (FluidSynth, General MIDI soundfont), builds realistic separation estimates (leakage
plus noise, filtered/smeared sources, ideal binary and ratio STFT masks), then times
``mir_eval.separation.bss_eval_sources(..., compute_permutation=False)`` clip by clip against
:func:`avtoolkit.metrics.bss_eval_sources` on batches, and compares SDR, SIR and SAR.

Prints a table and exits with status 1 if the speed-up is below ``--min-speedup`` or any |Δ| exceeds
``--tolerance`` dB. Run: ``.venv/bin/python benchmarks/bss_eval_speed.py``.
"""

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from scipy.signal import fftconvolve, istft, stft

from avtoolkit.data.synth.sounds import render_clip
from avtoolkit.metrics import bss_eval_sources

PAIRS = [
    ("violin", "cello"),
    ("trumpet", "flute"),
    ("piano", "drum"),
    ("flute", "clarinet"),
    ("cello", "electric_bass"),
    ("erhu", "violin"),
    ("guzheng", "harp"),
    ("saxophone", "trombone"),
]


def estimates(refs: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """A separation-like estimate of each source of ``refs (2, L)``."""
    other = refs[::-1]
    if kind == 0:  # leakage of the other source and noise
        return refs + 0.3 * other + 0.05 * refs.std() * rng.standard_normal(refs.shape)
    if kind == 1:  # smeared by a short decaying filter, plus leakage
        h = rng.standard_normal(64) * np.exp(-np.arange(64) / 10.0)
        return np.stack([fftconvolve(x, h)[: refs.shape[1]] for x in refs]) + 0.2 * other
    kw = {"nperseg": 1022, "noverlap": 1022 - 256}
    _, _, spec = stft(refs, **kw)
    _, _, mix = stft(refs.sum(0), **kw)
    mag = np.abs(spec)
    if kind == 2:  # ideal binary mask on the mixture STFT (artefacts from the iSTFT)
        mask = mag / (mag.sum(0) + 1e-12) > 0.5
        return istft(mask * mix[None], **kw)[1][:, : refs.shape[1]]
    ratio = mag**2 / ((mag**2).sum(0) + 1e-12)  # ratio mask, plus a little noise
    return istft(ratio * mix[None], **kw)[1][:, : refs.shape[1]] + 0.01 * rng.standard_normal(refs.shape)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16, help="number of 2-source clips")
    parser.add_argument("--seconds", type=float, default=6.0, help="clip length")
    parser.add_argument("--sample-rate", type=int, default=11025)
    parser.add_argument("--batch-size", type=int, default=16, help="clips per fast-path call")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="threads of the fast path (default: all cores)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="fast-path timing repeats (the best is kept)")
    parser.add_argument("--min-speedup", type=float, default=30.0)
    parser.add_argument("--tolerance", type=float, default=0.01, help="max |Δ| in dB")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    refs, ests = [], []
    for k in range(args.clips):
        a, b = PAIRS[k % len(PAIRS)]
        r = np.stack(
            [
                render_clip(a, args.seconds, args.sample_rate, seed=2 * k),
                render_clip(b, args.seconds, args.sample_rate, seed=2 * k + 1),
            ]
        )
        refs.append(r.astype(np.float64))
        ests.append(estimates(refs[-1], k % 4, rng))
    ref_t, est_t = torch.from_numpy(np.stack(refs)), torch.from_numpy(np.stack(ests))

    exact = np.empty((3, args.clips, 2))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import mir_eval

        for k in range(args.clips):
            sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(refs[k], ests[k], compute_permutation=False)
            exact[:, k] = sdr, sir, sar
    t_mir = (time.perf_counter() - t0) / args.clips

    bss_eval_sources(ref_t[:1], est_t[:1])  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fast = [
            torch.stack(bss_eval_sources(ref_t[i : i + args.batch_size], est_t[i : i + args.batch_size]))
            for i in range(0, args.clips, args.batch_size)
        ]
        best = min(best, time.perf_counter() - t0)
    t_fast = best / args.clips
    delta = np.abs(torch.cat(fast, 1).numpy() - exact).reshape(3, -1).max(1)
    speedup = t_mir / t_fast

    print(
        f"BSS Eval sources, {args.clips} clips of 2 sources × {args.seconds:g} s at {args.sample_rate} Hz "
        f"({int(args.seconds * args.sample_rate)} samples), 512-tap filters"
    )
    print(
        f"fast path: {torch.get_num_threads()} threads, batches of {args.batch_size}, "
        f"time = best of {args.repeats}; mir_eval: numpy defaults (multi-threaded BLAS), one clip at a time"
    )
    print()
    print(f"{'':24}{'time / clip':>14}")
    print(f"{'mir_eval':24}{t_mir * 1e3:>11.1f} ms")
    print(f"{'fast path (batched)':24}{t_fast * 1e3:>11.1f} ms")
    print(f"{'speed-up':24}{speedup:>12.1f} ×   (target ≥ {args.min_speedup:g}×)")
    print()
    print(f"{'max |Δ| vs mir_eval':24}{'SDR':>12}{'SIR':>12}{'SAR':>12}   (tolerance {args.tolerance:g} dB)")
    print(f"{'':24}" + "".join(f"{d:>9.1e} dB" for d in delta))
    ok_speed, ok_acc = speedup >= args.min_speedup, bool((delta <= args.tolerance).all())
    print()
    print(f"speed: {'PASS' if ok_speed else 'FAIL'}   accuracy: {'PASS' if ok_acc else 'FAIL'}")
    return 0 if ok_speed and ok_acc else 1


if __name__ == "__main__":
    sys.exit(main())
