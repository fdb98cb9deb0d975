"""Read a checkpoint's tensor names and shapes without reading its tensor data.

safetensors: the 8-byte length and the JSON header only, validated against the file size so a
truncated download is caught here. Pickle checkpoints (.ckpt/.pt) go through
`torch.load(weights_only=True)`, which refuses any pickle that would run code."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 100 * 1024 * 1024


class CheckpointError(Exception):
    """A checkpoint file that cannot be used; the message names the file and the cause."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    path: Path
    format: str  # "safetensors" | "ckpt"
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 0  # safetensors: the offset of the first tensor byte (8 + header length)

    def shape(self, key: str) -> tuple[int, ...] | None:
        info = self.tensors.get(key)
        return info.shape if info else None


def read_header(path: Path) -> Header:
    """The file's header; remembered until the file changes (detection, sizing and checks share it)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
    return _read_header_cached(path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _read_header_cached(path: Path, size: int, mtime_ns: int) -> Header:
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return read_safetensors_header(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return read_pickle_header(path)
    raise CheckpointError(f"{path}: unsupported file type {path.suffix!r}")


def read_safetensors_header(path: Path) -> Header:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n + 8 > size:
                raise CheckpointError(
                    f"{path}: corrupt or truncated safetensors file (header length {n}, file size {size})"
                )
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = doc.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    end = 0
    for key, entry in doc.items():
        try:
            start, stop = entry["data_offsets"]
            tensors[key] = TensorInfo(str(entry["dtype"]), tuple(int(d) for d in entry["shape"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header entry {key!r}") from e
        end = max(end, int(stop))
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path}: truncated: the header describes {8 + n + end} bytes but the file has {size}"
            " (an interrupted download or copy?)"
        )
    meta = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    return Header(path, "safetensors", tensors, meta, data_start=8 + n)


def read_pickle_header(path: Path) -> Header:
    """Only what `weights_only=True` allows; mmap keeps the tensor data on disk."""
    import pickle
    import zipfile

    import torch

    try:
        mmap = zipfile.is_zipfile(path)
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused to load: this pickle checkpoint needs code execution to open"
            f" ({first[:200]}). Convert it to .safetensors with a tool you trust, or use a safetensors release."
        ) from e
    except Exception as e:  # torch raises RuntimeError/EOFError/... for damaged files
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a state dict (found {type(obj).__name__})")
    tensors = {
        k: TensorInfo(str(v.dtype).removeprefix("torch."), tuple(v.shape))
        for k, v in obj.items()
        if isinstance(k, str) and isinstance(v, torch.Tensor)
    }
    return Header(path, "ckpt", tensors)
