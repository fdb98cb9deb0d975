"""Titles use the A1111 hash (first 10 hex of the file's sha256), computed lazily and cached."""

import hashlib
import os

from webui.models.hashes import HashCache
from webui.models.registry import CheckpointEntry, CheckpointRegistry


def test_hash_is_cached_by_path_size_and_mtime(tmp_path):
    folder = tmp_path / "sd"
    folder.mkdir()
    f = folder / "m.safetensors"
    f.write_bytes(os.urandom(1000))
    cache = HashCache(tmp_path / "hashes.json")
    registry = CheckpointRegistry((folder,), cache)
    (entry,) = registry.scan()
    assert entry.sha256 is None and entry.to_json()["hash"] == "pending" and entry.title == "m.safetensors"
    entry = registry.with_hash(entry)
    assert entry.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
    assert entry.title == f"m.safetensors [{entry.sha256[:10]}]"
    # A new process sees the cached hash without reading the file.
    (again,) = CheckpointRegistry((folder,), HashCache(tmp_path / "hashes.json")).scan()
    assert again.sha256 == entry.sha256
    # Changing the file invalidates it.
    f.write_bytes(os.urandom(1001))
    (changed,) = CheckpointRegistry((folder,), HashCache(tmp_path / "hashes.json")).scan()
    assert changed.sha256 is None


def test_json_keys_are_exactly_the_documented_ones(tmp_path):
    from webui.models.detect import Detection

    e = CheckpointEntry("a.safetensors", tmp_path / "a.safetensors", "safetensors", 5, Detection("sd1", "eps"))
    assert list(e.to_json()) == ["name", "path", "family", "prediction", "hash", "size", "format"]
    bad = CheckpointEntry("b.safetensors", tmp_path / "b.safetensors", "safetensors", 5, Detection("unknown", reason="why"))
    assert bad.to_json()["reason"] == "why"
