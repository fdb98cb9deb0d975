"""sha256 of model files, computed lazily and cached by (path, size, mtime) in one JSON file.

Listing never waits for hashing: `get` answers from the cache or None ("pending"); `compute`
hashes and records. The cache is rewritten atomically and merged with what other processes wrote."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

from webui.fileio import atomic_write_json

log = logging.getLogger(__name__)
CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path, start: int = 0) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class HashCache:
    def __init__(self, file: Path):
        self.file = Path(file)
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        try:
            doc = json.loads(self.file.read_text(encoding="utf-8"))
            entries = doc.get("sha256", {}) if isinstance(doc, dict) else None
            if not isinstance(entries, dict):
                raise ValueError("unexpected layout")
            return entries
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("hash cache %s is unreadable (%s); starting a new one", self.file, e)
            return {}

    @staticmethod
    def _stamp(path: Path) -> tuple[int, float]:
        st = path.stat()
        return st.st_size, st.st_mtime

    def get(self, path: Path) -> str | None:
        path = Path(path).resolve()
        entry = self._entries.get(str(path))
        try:
            size, mtime = self._stamp(path)
        except OSError:
            return None
        if entry and entry.get("size") == size and entry.get("mtime") == mtime:
            return entry.get("sha256")
        return None

    def compute(self, path: Path) -> str:
        path = Path(path).resolve()
        if cached := self.get(path):
            return cached
        size, mtime = self._stamp(path)
        digest = sha256_file(path)
        with self._lock:
            merged = self._read()
            merged.update(self._entries)
            merged[str(path)] = {"size": size, "mtime": mtime, "sha256": digest}
            self._entries = merged
            try:
                atomic_write_json(self.file, {"sha256": merged})
            except OSError as e:
                log.warning("could not save hash cache %s: %s", self.file, e)
        return digest
