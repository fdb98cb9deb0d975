"""What the ratio benchmarks share: alternating timed runs, and the flags for model, size and device."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def alternate(runs: dict[str, Callable[[], object]], reps: int, device: str) -> dict[str, float]:
    """Median seconds per name: each callable once per rep, in turn (a, b, a, b, ...), never at once."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def ratio_parser(doc: str, reps: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,sd15")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--reps", type=int, default=reps)
    p.add_argument("--sampler", default="Euler")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--dir", default="/tmp/easel-bench-overhead")
    return p


def describe(args: argparse.Namespace) -> str:
    return (f"device={args.device} dtype={args.dtype} size={args.size} steps={args.steps} sampler={args.sampler} "
            f"reps={args.reps} torch={torch.__version__} threads={torch.get_num_threads()}")


def run_ratio(doc: str, reps: int, measure, names: tuple[str, str]) -> None:
    """Parse the flags, then for each model print `measure(model, args)` -> (baseline s, ours s) and the ratio."""
    from webui.cli import quiet_libraries

    args = ratio_parser(doc, reps).parse_args()
    quiet_libraries()
    print(describe(args))
    base, ours = names
    print(f"{'model':8} {base + ' s':>10} {ours + ' s':>10} {'ratio':>6} {'added ms':>9}")
    for model in args.models.split(","):
        a, b = measure(model, args)
        print(f"{model:8} {a:10.3f} {b:10.3f} {b / a:6.3f} {(b - a) * 1000:9.1f}", flush=True)
