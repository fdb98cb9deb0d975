"""The LoRA files in `models/Lora` and `--lora-dir` (recursive): what each is, read from its header only,
and remembered by (path, size, mtime) in memory and in `cache/lora-library.json`, so a folder of
thousands of files lists in milliseconds after the first scan and a changed file is read again.

Pickles (`.pt`, `.ckpt`) are listed so the user learns why they do nothing; they are never opened.
The A1111 LoRA hash (sha256 of the bytes after the safetensors header, 12 hex shown) is computed on
first use and cached the same way; lookups by hash use only hashes already known, as A1111 does."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from extensions.lora.layout import describe
from webui.fileio import atomic_write_json
from webui.models.hashes import sha256_file
from webui.models.header import CheckpointError, read_header

log = logging.getLogger(__name__)

SAFETENSORS = ".safetensors"
PICKLES = (".pt", ".ckpt")
PREVIEW_EXTS = ("png", "jpg", "jpeg", "webp", "gif")
CACHE_FILE = "lora-library.json"
CACHE_VERSION = 1
HASH_QUERY = re.compile(r"[0-9a-fA-F]{10,64}")
PICKLE_REFUSED = ("refused: a pickle (.pt/.ckpt) LoRA can run code when it is opened, so Easel never loads one; "
                  "use a .safetensors release or convert it with a tool you trust")


@dataclass
class LoraEntry:
    """One file in the LoRA folders. `name` is its path under the folder without the suffix."""

    name: str
    path: Path
    size: int
    mtime_ns: int
    alias: str
    family: str = "unknown"  # sd1 | sd2 | sdxl | sd1/sd2 | unknown
    format: str = "unknown"
    rank: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # why it cannot be applied
    sha256: str | None = None  # of the bytes after the safetensors header (A1111's LoRA hash)
    preview: Path | None = None

    @property
    def stamp(self) -> tuple[int, int]:
        return self.size, self.mtime_ns

    @property
    def hash12(self) -> str | None:
        return self.sha256[:12] if self.sha256 else None

    def item(self) -> dict[str, Any]:
        """A1111's `/sdapi/v1/loras` entry (name, alias, path, metadata) plus what Easel knows."""
        return {"name": self.name, "alias": self.alias, "path": str(self.path), "metadata": _parsed(self.metadata),
                "family": self.family, "format": self.format, "rank": self.rank, "hash": self.hash12,
                "preview": str(self.preview) if self.preview else None, "error": self.error}


def _parsed(metadata: dict[str, str]) -> dict[str, Any]:
    """Metadata values that hold JSON (kohya's `ss_tag_frequency`, ...) as objects, as A1111 returns them."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, str) and value[:1] in "{[":
            try:
                out[key] = json.loads(value)
                continue
            except ValueError:
                pass
        out[key] = value
    return out


def lora_hash(path: Path) -> str:
    """A1111's LoRA ("addnet") hash: sha256 of the file from the end of the safetensors header on."""
    return sha256_file(path, start=read_header(path).data_start)


class LoraLibrary:
    """The listing for one set of folders; safe to use from the UI/API threads and the job thread."""

    def __init__(self, folders: tuple[Path, ...], cache_file: Path):
        self.folders, self.cache_file = tuple(folders), Path(cache_file)
        self._lock = threading.RLock()
        self._entries: dict[str, LoraEntry] | None = None
        self._cached = self._read_cache()
        self.header_reads = 0  # how many headers the scans read (the rest came from the cache)

    # ---- scanning -------------------------------------------------------------------------------

    def entries(self) -> list[LoraEntry]:
        with self._lock:
            if self._entries is None:
                self.refresh()
            return list(self._entries.values())

    def items(self) -> list[dict[str, Any]]:
        return [e.item() for e in self.entries()]

    def refresh(self) -> None:
        """Scan the folders again; only new or changed files have their header read."""
        with self._lock:
            found: dict[str, LoraEntry] = {}
            changed = False
            for root in self.folders:
                for path, preview in _walk(root):
                    name = path.relative_to(root).with_suffix("").as_posix()
                    if name in found:
                        continue  # the first folder wins, as for checkpoints
                    entry, new = self._entry(path, name)
                    entry.preview = preview
                    found[name] = entry
                    changed |= new
            changed |= {str(e.path) for e in found.values()} != set(self._cached)
            self._entries = found
            self._cached = {str(e.path): e for e in found.values()}
            if changed:
                self._write_cache()

    def _entry(self, path: Path, name: str) -> tuple[LoraEntry, bool]:
        st = path.stat()
        cached = self._cached.get(str(path))
        if cached is not None and cached.stamp == (st.st_size, st.st_mtime_ns):
            cached.name = name
            return cached, False
        entry = LoraEntry(name, path, st.st_size, st.st_mtime_ns, alias=path.stem)
        if path.suffix.lower() in PICKLES:
            entry.format, entry.error = "pickle", PICKLE_REFUSED
            return entry, True
        self.header_reads += 1
        try:
            header = read_header(path)
        except CheckpointError as e:
            entry.error = str(e).removeprefix(f"{path}: ")
            return entry, True
        layout = describe({k: v.shape for k, v in header.tensors.items()})
        entry.family, entry.format, entry.rank, entry.error = layout.family, layout.format, layout.rank, layout.error
        entry.metadata = dict(header.metadata)
        entry.alias = header.metadata.get("ss_output_name") or path.stem
        return entry, True

    # ---- lookups --------------------------------------------------------------------------------

    def find(self, query: str) -> LoraEntry | None:
        """By name, alias, file stem, case-insensitively, then by a known hash; rescans once on a miss
        (a file dropped in since the last listing)."""
        found = self._find(query)
        if found is None or not _unchanged(found):
            self.refresh()
            found = self._find(query)
        return found

    def _find(self, query: str) -> LoraEntry | None:
        entries = self.entries()
        q = query.strip()
        for key in (lambda e: e.name, lambda e: e.alias, lambda e: e.path.stem):
            hit = next((e for e in entries if key(e) == q), None)
            if hit is not None:
                return hit
        folded = [e for e in entries if q.casefold() in (e.name.casefold(), e.alias.casefold())]
        if folded:
            return folded[0]
        return self.find_hash(q)

    def find_hash(self, query: str) -> LoraEntry | None:
        if not HASH_QUERY.fullmatch(query):
            return None
        q = query.lower()
        return next((e for e in self.entries() if e.sha256 and e.sha256.startswith(q)), None)

    def with_hash(self, entry: LoraEntry) -> str:
        """The entry's LoRA hash (full hex), computed and cached on first use."""
        with self._lock:
            if entry.sha256 is None:
                entry.sha256 = lora_hash(entry.path)
                self._write_cache()
            return entry.sha256

    # ---- the on-disk cache ----------------------------------------------------------------------

    def _read_cache(self) -> dict[str, LoraEntry]:
        try:
            doc = json.loads(self.cache_file.read_text(encoding="utf-8"))
            if doc.get("version") != CACHE_VERSION:
                return {}
            return {p: LoraEntry(**{**d, "path": Path(p)}) for p, d in doc["files"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("LoRA cache %s is unreadable (%s); rescanning", self.cache_file, e)
            return {}

    def _write_cache(self) -> None:
        files = {}
        for path, entry in self._cached.items():
            d = asdict(entry)
            for key in ("path", "preview", "name"):
                d.pop(key)
            files[path] = {**d, "name": entry.name}
        try:
            atomic_write_json(self.cache_file, {"version": CACHE_VERSION, "files": files})
        except OSError as e:
            log.warning("could not save the LoRA cache %s: %s", self.cache_file, e)


def _unchanged(entry: LoraEntry) -> bool:
    """One stat: a file replaced since the last scan (same name, new content) must be read again."""
    try:
        st = entry.path.stat()
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == entry.stamp


def _walk(root: Path, seen: set[str] | None = None):
    """(LoRA file, its preview image or None), depth first in name order; one directory listing per folder
    (symlinked folders are followed once each)."""
    seen = set() if seen is None else seen
    real = os.path.realpath(root)
    if real in seen:
        return
    seen.add(real)
    try:
        with os.scandir(root) as it:
            items = sorted(it, key=lambda d: d.name)
    except OSError:
        return
    names = {d.name for d in items}
    for d in items:
        if d.is_dir():
            yield from _walk(Path(d.path), seen)
            continue
        suffix = os.path.splitext(d.name)[1].lower()
        if suffix == SAFETENSORS or suffix in PICKLES:
            stem = d.name[: -len(suffix)]
            preview = next((f"{stem}{mid}.{ext}" for ext in PREVIEW_EXTS for mid in ("", ".preview")
                            if f"{stem}{mid}.{ext}" in names), None)
            yield Path(d.path), (root / preview) if preview else None


# One library per model manager: the folders and cache belong to its Paths, and the WeakKeyDictionary
# lets a manager (and its listing) be garbage-collected with no unregister step. Hooks receive the
# manager, so this is a cache behind them, not state an extension reads directly.
_LIBRARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LIBRARIES_LOCK = threading.Lock()


def library_for(manager) -> LoraLibrary:
    with _LIBRARIES_LOCK:
        library = _LIBRARIES.get(manager)
        if library is None:
            library = LoraLibrary(manager.paths.lora_dirs, manager.paths.cache_dir / CACHE_FILE)
            _LIBRARIES[manager] = library
        return library
