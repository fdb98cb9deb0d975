"""Transparent huge pages for PyTorch's large CPU tensors.

On a CPU the UNet's weights are read from memory every step; with 4 KiB pages the TLB misses cost a
lot, and how much depends on where each tensor happened to land (a copied weight can run 10% slower
than the original). PyTorch can ask the kernel for 2 MiB pages for allocations of 2 MiB and more
(`THP_MEM_ALLOC_ENABLE=1`, honoured where THP is `madvise` or `always`). Measured on the 2-core
sandbox: a full-size SD1.5 UNet step 2.06 s -> 1.65 s (docs/performance.md).

PyTorch reads the variable once, at its first allocation, so `prefer_huge_pages` must run before
torch is imported; a value the user set (e.g. `THP_MEM_ALLOC_ENABLE=0`) is kept."""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def prefer_huge_pages(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Turn huge pages on for this process unless set already; False when torch is already imported
    (too late to matter)."""
    if "torch" in sys.modules:
        return False
    environ.setdefault(VARIABLE, "1")
    return True
