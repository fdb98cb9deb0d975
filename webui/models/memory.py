"""Memory facts the cache needs: machine RAM, process RSS, bytes held by a pipeline."""

from __future__ import annotations

import ctypes
import gc
import os

import torch


def total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_ram() -> int:
    """RAM the kernel can give without swapping (MemAvailable), in bytes; free pages where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def rss() -> int:
    """Resident set size of this process, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pipeline_bytes(pipe) -> int:
    seen: set[int] = set()
    total = 0
    for module in getattr(pipe, "components", {}).values():
        if isinstance(module, torch.nn.Module):
            for t in list(module.parameters()) + list(module.buffers()):
                if id(t) not in seen and not t.is_meta:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
    return total


def release_freed_memory() -> None:
    """Return freed pages to the OS so eviction shows in RSS (glibc keeps them otherwise)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
