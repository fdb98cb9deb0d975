"""The safetensors file layout written by Easel's converter: an 8-byte length, a JSON header, the data.

Written here rather than by `safetensors.torch.save_file` so that the same tensors and metadata always
give the same bytes (see `checkpoint._write_safetensors`), and so that a weightless layout file can be
written from shapes alone (`layout.write_layout_file`)."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import torch

SAFETENSORS_DTYPES = {
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def tensor_order(shapes: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> list[str]:
    """Widest dtype first, then by name, as safetensors orders them: every tensor starts aligned to its
    element size, so a memory-mapped load needs no copy."""
    return sorted(shapes, key=lambda name: (-shapes[name][1].itemsize, name))


def safetensors_header(
    shapes: Mapping[str, tuple[tuple[int, ...], torch.dtype]], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, int]:
    """(the 8-byte length + JSON header, padded to 8 bytes as safetensors writes it; data size).

    The header depends only on the contents: metadata keys sorted, tensors in `tensor_order`."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    offset = 0
    for name in tensor_order(shapes):
        shape, dtype = shapes[name]
        numel = 1
        for d in shape:
            numel *= d
        end = offset + numel * dtype.itemsize
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset
