"""Detection speed: real-size layout files of every family (sparse, so only headers exist on disk).

Baseline in the same run: reading and JSON-parsing the same safetensors header, nothing else.
Usage: python bench/detect.py [--dir /tmp/easel-bench-layouts] [--repeat 20]"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui.models.convert.layout import write_layout_file  # noqa: E402
from webui.models.detect import detect  # noqa: E402
from webui.models.families import FAMILIES  # noqa: E402
from webui.models.header import read_safetensors_header as read_header  # noqa: E402  (uncached)


def raw_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/easel-bench-layouts")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{'family':14s} {'file GB':>8s} {'tensors':>8s} {'raw header':>11s} {'detect':>9s} {'ratio':>6s}  result")
    for name, fam in FAMILIES.items():
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            write_layout_file(fam.config_dir, path)
        raw = best(lambda: raw_header(path), args.repeat)
        ours = best(lambda: detect(read_header(path)), args.repeat)
        det = detect(read_header(path))
        n = len(read_header(path).tensors)
        print(f"{name:14s} {path.stat().st_size / 1e9:8.2f} {n:8d} {raw * 1e3:9.2f}ms {ours * 1e3:7.2f}ms {ours / raw:5.1f}x  {det.family}")


if __name__ == "__main__":
    main()
