"""Single-file load time and peak RSS for real-size SD1.5 and SDXL layouts with random fp16 weights.

Each measurement runs in a fresh process (peak RSS = its VmHWM) with the file in the page cache
(warmed by the first run). safetensors memory-maps, so a load can return before reading anything:
every mode therefore touches every page of every weight before the clock stops ("ready"). Baselines
measured in the same run:
  raw      reading the whole file into one buffer (the floor: the bytes have to come in)
  diffusers  Pipeline.from_single_file(path, config=<folder>, local_files_only=True): diffusers' own
           loader with only the arguments it needs offline (its true defaults fetch configs from the Hub)
  easel    ModelManager.load: detection, the same loader with Easel's tokenizers/scheduler, verification
  cached   a second ModelManager.load of the same checkpoint in the same process
Usage: python bench/load.py [--families sd1,sdxl-base] [--dir /tmp/easel-bench] [--dtype float16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_random_checkpoint(family: str, path: Path) -> None:
    from safetensors.torch import save_file

    from webui.models.convert.layout import layout_state_dict
    from webui.models.families import FAMILIES

    if path.is_file():
        return
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for k, t in layout_state_dict(FAMILIES[family].config_dir).items():
        tensors[k] = (torch.randn(t.shape, generator=gen) * 0.02).to(torch.float16) if t.numel() else torch.zeros(t.shape, dtype=torch.float16)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.rename(path)


def fault_in(tensors) -> None:
    """Touch one byte per 4 KiB page so memory-mapped weights are really resident."""
    for t in tensors:
        if t.numel():
            t.detach().reshape(-1).view(torch.uint8)[::4096].sum()


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def peak_rss() -> int:
    return _status("VmHWM:")


def current_rss() -> int:
    return _status("VmRSS:")


def child(mode: str, path: str, dtype: str) -> None:
    """Runs in a fresh process; prints one JSON line."""
    if mode == "make":
        family, out = path.split(":", 1)
        return make_random_checkpoint(family, Path(out))
    import diffusers

    from webui.models.detect import detect
    from webui.models.families import FAMILIES
    from webui.models.header import read_header
    from webui.models.manager import ModelManager
    from webui.settings import Paths, RuntimeSettings

    torch_dtype = getattr(torch, dtype)
    fam = FAMILIES[detect(read_header(Path(path))).family]
    pipeline_cls = getattr(diffusers, fam.pipeline)  # resolve diffusers' lazy imports before timing
    base = current_rss()
    t0 = time.perf_counter()
    extra = {}
    if mode == "raw":
        buf = bytearray(os.path.getsize(path))
        with open(path, "rb", buffering=0) as f:
            n = f.readinto(buf)
    elif mode == "diffusers":
        pipe = pipeline_cls.from_single_file(
            path, config=str(fam.config_dir), local_files_only=True, torch_dtype=torch_dtype
        )
        fault_in(p for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters())
        n = sum(p.numel() for p in pipe.unet.parameters())
    else:
        folder = Path(path).parent
        manager = ModelManager(Paths.from_flags(data_dir=folder / "data", ckpt_dir=folder), RuntimeSettings(dtype=dtype))
        entry = next(e for e in manager.checkpoints() if str(e.path) == path)
        loaded = manager.load(entry)
        pipe = loaded.pipeline
        fault_in(p for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters())
        n = sum(p.numel() for p in loaded.pipeline.unet.parameters())
        t1 = time.perf_counter()
        assert manager.load(entry).pipeline is loaded.pipeline
        extra["cached_s"] = time.perf_counter() - t1
    seconds = time.perf_counter() - t0 - extra.get("cached_s", 0)
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss": peak_rss(), "added_rss": peak_rss() - base, "numel": n, **extra}))


def measure(mode: str, path: Path | str, dtype: str) -> dict | None:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path), "--dtype", dtype],
        capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default="sd1,sdxl-base")
    ap.add_argument("--dir", default="/tmp/easel-bench")
    ap.add_argument("--dtype", default="float16", help="float16 loads as stored; float32 converts (a copy)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per mode; the fastest is reported")
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.dtype)
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, dtype {args.dtype}, file in page cache, best of {args.repeat}")
    for family in args.families.split(","):
        path = folder / f"random-{family}.safetensors"
        if not path.is_file():
            measure("make", f"{family}:{path}", args.dtype)
        size = path.stat().st_size
        measure("raw", path, args.dtype)  # warm the page cache
        rows = {m: min((measure(m, path, args.dtype) for _ in range(args.repeat)), key=lambda r: r["seconds"]) for m in ("raw", "diffusers", "easel")}
        raw = rows["raw"]["seconds"]
        print(f"\n{family}: {size / 1e9:.2f} GB")
        for m, r in rows.items():
            print(
                f"  {m:9s} {r['seconds']:7.2f} s  {r['seconds'] / raw:5.2f}x raw read   "
                f"peak RSS {r['peak_rss'] / 1e9:5.2f} GB, added by the load {r['added_rss'] / 1e9:5.2f} GB"
                f" = {r['added_rss'] / size:4.2f}x file"
            )
        print(f"  cached reload {rows['easel']['cached_s'] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
