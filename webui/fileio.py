"""Crash-safe file writes: write a temp file beside the target, fsync, then rename over it.

A reader never sees a half-written file, and an interrupted write leaves the old file intact."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename; the parent folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=1, sort_keys=True).encode("utf-8"))


def safe_child(root: Path, name: str) -> Path:
    """`root / name`, refusing names that would escape `root` (`../x`, absolute paths, NUL)."""
    if not name or "\x00" in name or Path(name).is_absolute():
        raise ValueError(f"invalid name {name!r}: must be a relative path inside {root}")
    root = Path(root).resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"invalid name {name!r}: it points outside {root}")
    return target
