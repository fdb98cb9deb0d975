"""Real-size A1111 checkpoint files with no weights: the true header over a sparse, all-zero data region.

Detection, hashing, the model list and `from_single_file` all need real-size files to be tested
honestly, but real checkpoints are 2-7 GB downloads. A layout file has the exact header an A1111
export of that architecture has (names, dtypes, shapes, offsets), built from the family's config
folder on the meta device, and a data region that is a hole: it takes milliseconds and no disk
space, and reads back as zeros."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel

from webui.models.convert.checkpoint import components_to_ldm
from webui.models.convert.safetensors_format import safetensors_header


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def empty_components(config_folder: str | os.PathLike[str]) -> dict[str, torch.nn.Module]:
    """unet/vae/text_encoder(_2) of a diffusers config folder, built on the meta device (no memory)."""
    folder = Path(config_folder)
    index = _read_json(folder / "model_index.json")
    parts: dict[str, torch.nn.Module] = {}
    with init_empty_weights():
        parts["unet"] = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        parts["vae"] = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        for name in ("text_encoder", "text_encoder_2"):
            library, class_name = index.get(name) or (None, None)
            if class_name is None:
                continue
            if library != "transformers":
                raise ValueError(f"{folder}: {name} is {library}.{class_name}, expected a transformers CLIP model")
            cls = getattr(transformers, class_name)
            parts[name] = cls(cls.config_class.from_pretrained(folder / name, local_files_only=True))
    return parts


def layout_state_dict(config_folder: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The A1111 single-file keys of a config folder's architecture, as meta tensors (shapes only)."""
    return components_to_ldm(**empty_components(config_folder))


def write_layout_file(
    config_folder: str | os.PathLike[str],
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float16,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a real-size, weightless A1111 `.safetensors` for the config folder's architecture.

    Floating tensors get `dtype` (A1111 exports are fp16); the file is complete and valid, its data
    region a sparse hole of zeros. Written to a temp file beside `path`, then renamed."""
    path = Path(path)
    tensors = layout_state_dict(config_folder)
    shapes = {k: (tuple(t.shape), dtype if t.is_floating_point() else t.dtype) for k, t in tensors.items()}
    head, data_size = safetensors_header(shapes, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            f.truncate(len(head) + data_size)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
