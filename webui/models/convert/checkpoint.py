"""A diffusers pipeline -> one A1111/LDM-layout `.safetensors` file, and back to a config folder.

The file carries every component's diffusers config in its metadata (`easel.diffusers`), so a model
with non-standard sizes (merges of odd models, the tiny test models) can be loaded offline with
`from_single_file(config=write_config_folder(...))` even though no shipped config folder fits it."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import PreTrainedModel

from webui.fileio import atomic_write_json
from webui.models.convert.safetensors_format import safetensors_header, tensor_order
from webui.models.convert.text_encoders import clip_l_to_ldm, open_clip_to_ldm
from webui.models.convert.unet import unet_to_ldm
from webui.models.convert.vae import vae_to_ldm
from webui.models.ldm_keys import (
    REFINER_CLIP_G_PREFIX,
    SD1_CLIP_PREFIX,
    SD2_CLIP_PREFIX,
    SDXL_CLIP_G_PREFIX,
    SDXL_CLIP_L_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)

METADATA_CONFIGS = "easel.diffusers"
METADATA_FAMILY = "easel.family"
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")

_COMPONENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in tensors.items()}


def is_open_clip(text_encoder: PreTrainedModel) -> bool:
    """OpenCLIP text towers use exact GELU; OpenAI's CLIP-L uses QuickGELU. A trained-in property."""
    return text_encoder.config.hidden_act == "gelu"


def components_to_ldm(
    *,
    unet: torch.nn.Module | None = None,
    vae: torch.nn.Module | None = None,
    text_encoder: PreTrainedModel | None = None,
    text_encoder_2: PreTrainedModel | None = None,
    open_clip: bool | None = None,
) -> dict[str, torch.Tensor]:
    """LDM-named tensors of the given components; works on meta tensors (no data is touched).

    The text encoder layout follows the components present: both -> SDXL, only the second -> SDXL
    refiner, only the first -> SD1 (CLIP-L) or SD2 (OpenCLIP), decided by `open_clip` or, when None,
    by the encoder's activation."""
    out: dict[str, torch.Tensor] = {}
    if unet is not None:
        out.update(_prefixed(UNET_PREFIX, unet_to_ldm(unet.state_dict(), unet.config)))
    if vae is not None:
        out.update(_prefixed(VAE_PREFIX, vae_to_ldm(vae.state_dict(), vae.config)))
    if text_encoder is not None and text_encoder_2 is not None:
        out.update(_prefixed(SDXL_CLIP_L_PREFIX, clip_l_to_ldm(text_encoder.state_dict())))
        out.update(_prefixed(SDXL_CLIP_G_PREFIX, open_clip_to_ldm(text_encoder_2.state_dict())))
    elif text_encoder_2 is not None:
        out.update(_prefixed(REFINER_CLIP_G_PREFIX, open_clip_to_ldm(text_encoder_2.state_dict())))
    elif text_encoder is not None:
        sd2 = is_open_clip(text_encoder) if open_clip is None else open_clip
        if sd2:
            out.update(_prefixed(SD2_CLIP_PREFIX, open_clip_to_ldm(text_encoder.state_dict(), pad_penultimate=True)))
        else:
            out.update(_prefixed(SD1_CLIP_PREFIX, clip_l_to_ldm(text_encoder.state_dict())))
    return out


def pipeline_to_ldm(pipe: Any, *, open_clip: bool | None = None) -> dict[str, torch.Tensor]:
    """The A1111 single-file state dict of a Stable Diffusion / SDXL pipeline (tensors are not copied)."""
    return components_to_ldm(
        unet=getattr(pipe, "unet", None),
        vae=getattr(pipe, "vae", None),
        text_encoder=getattr(pipe, "text_encoder", None),
        text_encoder_2=getattr(pipe, "text_encoder_2", None),
        open_clip=open_clip,
    )


def component_config(component: Any) -> dict[str, Any]:
    """The dict that component's config.json holds when saved with `save_pretrained`."""
    if isinstance(component, PreTrainedModel):
        cfg = json.loads(component.config.to_json_string(use_diff=False))
        cfg["architectures"] = cfg.get("architectures") or [type(component).__name__]
        return cfg
    return json.loads(component.to_json_string())


def pipeline_configs(pipe: Any) -> dict[str, dict[str, Any]]:
    """{"model_index": ..., "unet": ..., ...} for every component the pipeline has."""
    configs = {"model_index": json.loads(pipe.to_json_string())}
    for name in COMPONENTS:
        if (component := getattr(pipe, name, None)) is not None:
            configs[name] = component_config(component)
    return configs


def _write_safetensors(tensors: dict[str, torch.Tensor], path: str, metadata: Mapping[str, str]) -> None:
    """The safetensors format with a header that depends only on the contents. safetensors' own writer
    puts the metadata keys in a per-process hash order, so the same model written twice got two file
    hashes (and the demo model another "Model hash" on every install)."""
    shapes = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    head, _ = safetensors_header(shapes, metadata)
    with open(path, "wb") as f:
        f.write(head)
        for name in tensor_order(shapes):
            t = tensors[name]
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().data)
        f.flush()
        os.fsync(f.fileno())


def _storage_safe(tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors in `dtype` (floats only), none sharing memory (safetensors refuses that)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if t.is_meta:
            raise ValueError(f"{name} is on the meta device; write_layout_file is for shape-only models")
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def save_single_file(
    pipe: Any,
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
    open_clip: bool | None = None,
) -> Path:
    """Write `pipe` as an A1111-layout `.safetensors`, atomically (temp file in the folder, then rename).

    `metadata` adds header strings, e.g. {"easel.family": "sdxl-base"}; `easel.diffusers` is always
    written. `dtype` casts floating tensors (e.g. torch.float16 for a half-size file)."""
    path = Path(path)
    tensors = _storage_safe(pipeline_to_ldm(pipe, open_clip=open_clip), dtype)
    header = {k: str(v) for k, v in (metadata or {}).items()}
    header[METADATA_CONFIGS] = json.dumps(pipeline_configs(pipe), sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _write_safetensors(tensors, tmp, header)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_embedded_configs(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """The `easel.diffusers` configs a file was saved with, or None for files Easel did not write."""
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(METADATA_CONFIGS)
    return json.loads(raw) if raw else None


def config_file(name: str) -> str:
    """Where `write_config_folder` puts component `name`'s config, relative to the folder."""
    if name == "model_index":
        return "model_index.json"
    return "scheduler/scheduler_config.json" if name == "scheduler" else f"{name}/config.json"


def write_config_folder(configs: Mapping[str, Mapping[str, Any]], folder: str | os.PathLike[str]) -> Path:
    """Lay out `configs` (as from `pipeline_configs`) as a diffusers folder that `config=` accepts."""
    folder = Path(folder)
    if "model_index" not in configs:
        raise ValueError("configs lack 'model_index' (the pipeline class and its components)")
    for name, cfg in configs.items():
        if not _COMPONENT_NAME.fullmatch(name):
            # the configs may come from a downloaded file's metadata: never let a name pick the path
            raise ValueError(f"invalid component name {name!r} in configs")
        atomic_write_json(folder / config_file(name), dict(cfg))
    return folder
