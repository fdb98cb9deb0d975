"""The checkpoints a user has: scanned from A1111 folders, detected, titled `name [hash10]`.

A scan reads headers only (milliseconds per file); hashes come from the cache or show as pending.
One bad file is listed with family "error" and its reason; it never hides the rest of the folder."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from webui.models.detect import Detection, detect
from webui.models.detect_folder import detect_folder
from webui.models.hashes import HashCache
from webui.models.header import CheckpointError, read_header

log = logging.getLogger(__name__)
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt")


@dataclass(frozen=True)
class CheckpointEntry:
    name: str  # path relative to its models folder, with extension, "/"-separated (A1111's name)
    path: Path
    format: str  # "safetensors" | "ckpt" | "diffusers"
    size: int
    detection: Detection
    sha256: str | None = None

    @property
    def model_name(self) -> str:
        return self.name.rsplit(".", 1)[0] if self.format != "diffusers" else self.name

    @property
    def hash10(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash10}]" if self.hash10 else self.name

    def to_json(self) -> dict:
        """The `easel models --json` shape; scripts rely on exactly these keys."""
        out = {
            "name": self.name,
            "path": str(self.path),
            "family": self.detection.family,
            "prediction": self.detection.prediction,
            "hash": self.hash10 or "pending",
            "size": self.size,
            "format": self.format,
        }
        if not self.detection.known:
            out["reason"] = self.detection.reason
        return out


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def inspect_checkpoint(path: Path, name: str, hashes: HashCache | None = None) -> CheckpointEntry:
    """Detect one file or diffusers folder; never raises for a bad file."""
    if path.is_dir():
        return CheckpointEntry(name, path, "diffusers", _folder_size(path), detect_folder(path))
    fmt = "safetensors" if path.suffix.lower() == ".safetensors" else "ckpt"
    size = path.stat().st_size
    try:
        det = detect(read_header(path), path)
    except CheckpointError as e:
        det = Detection("error", reason=str(e))
    return CheckpointEntry(name, path, fmt, size, det, hashes.get(path) if hashes else None)


class CheckpointRegistry:
    def __init__(self, folders: tuple[Path, ...], hashes: HashCache):
        self.folders = tuple(folders)
        self.hashes = hashes
        self._seen: dict[tuple[str, int, float], CheckpointEntry] = {}

    def _candidates(self):
        for root in self.folders:
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                here = Path(dirpath)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for d in list(dirnames):
                    if _is_diffusers_folder(here / d):
                        dirnames.remove(d)
                        yield root, here / d
                for f in sorted(filenames):
                    if f.lower().endswith(CHECKPOINT_SUFFIXES) and not f.startswith("."):
                        yield root, here / f

    def scan(self) -> list[CheckpointEntry]:
        entries = []
        for root, path in self._candidates():
            name = path.relative_to(root).as_posix()
            try:
                st = path.stat()
            except OSError as e:
                entries.append(CheckpointEntry(name, path, "unknown", 0, Detection("error", reason=f"{path}: {e}")))
                continue
            key = (str(path), st.st_size, st.st_mtime)
            entry = self._seen.get(key) or inspect_checkpoint(path, name, self.hashes)
            self._seen[key] = entry
            if entry.sha256 is None and path.is_file():
                entry = CheckpointEntry(entry.name, path, entry.format, entry.size, entry.detection, self.hashes.get(path))
            entries.append(entry)
        return entries

    def with_hash(self, entry: CheckpointEntry) -> CheckpointEntry:
        """The entry with its sha256 computed (reads the whole file once, then cached)."""
        if entry.sha256 or not entry.path.is_file():
            return entry
        return CheckpointEntry(entry.name, entry.path, entry.format, entry.size, entry.detection, self.hashes.compute(entry.path))

    def find(self, query: str) -> CheckpointEntry:
        return match(self.scan(), query, self.folders)


def match(entries: list[CheckpointEntry], query: str, folders: tuple[Path, ...] = ()) -> CheckpointEntry:
    """By title, name, name without extension, or short/full hash. File paths are not accepted."""
    q = query.strip()
    base = q.rsplit(" [", 1)[0]
    for candidates in (q, base):
        for e in entries:
            if candidates in (e.title, e.name, e.model_name):
                return e
    for e in entries:
        if e.sha256 and len(q) >= 8 and e.sha256.startswith(q.lower()):
            return e
    known = ", ".join(e.name for e in entries) or "none"
    where = ", ".join(map(str, folders)) or "the model folders"
    raise LookupError(f"no checkpoint named {query!r} in {where} (found: {known})")
