"""Checks after every load for what diffusers leaves silent.

A missing tokenizer file yields a 2-token tokenizer that encodes every prompt as padding; a
component absent from the file stays on the `meta` device; a dtype request can be ignored. Each
becomes a clear error naming the file instead of garbage images later."""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import torch

from webui.models.clip_tokenizer import VOCAB_SIZE
from webui.models.families import Family
from webui.models.header import CheckpointError


def problems(pipe, family: Family, dtype: torch.dtype) -> list[str]:
    found: list[str] = []
    required = ("unet", "vae", *family.text_encoders)
    for name in required:
        if getattr(pipe, name, None) is None:
            found.append(f"component {name} is missing")
    for name in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, name, None)
        if tok is not None and len(tok) != VOCAB_SIZE:
            found.append(f"{name} has {len(tok)} tokens, expected {VOCAB_SIZE} (tokenizer files missing or damaged)")
    for name in required:
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        tensors = list(chain(module.named_parameters(), module.named_buffers()))
        on_meta = [n for n, t in tensors if t.is_meta]
        if on_meta:
            found.append(f"{name}: {len(on_meta)} tensors were not in the file (left on meta, e.g. {on_meta[0]})")
        wrong = sorted({str(t.dtype) for _, t in module.named_parameters() if t.is_floating_point() and t.dtype != dtype})
        if wrong:
            found.append(f"{name}: parameters in {', '.join(wrong)}, expected {dtype}")
    return found


def verify_pipeline(pipe, family: Family, dtype: torch.dtype, source: Path) -> None:
    if found := problems(pipe, family, dtype):
        raise CheckpointError(f"{source}: loaded as {family.name} but unusable: " + "; ".join(found))
