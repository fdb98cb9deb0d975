"""Offline loading of a detected checkpoint into a ready diffusers pipeline.

Single files go through diffusers' `from_single_file` with `config=` a local folder and
`local_files_only=True`: the family's shipped config folder, or the exact configs Easel embedded
when it wrote the file (non-standard sizes such as the demo models). Tokenizers and the scheduler
are passed in, so nothing is looked up on the Hub. Every result is verified (verify.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import diffusers
import torch

from webui.models.clip_tokenizer import PAD_CLIP_L, PAD_OPEN_CLIP, clip_tokenizer
from webui.models.families import FAMILIES, Family
from webui.models.header import CheckpointError, read_header
from webui.models.ldm_keys import component_prefixes
from webui.models.registry import CheckpointEntry
from webui.models.verify import verify_pipeline

log = logging.getLogger(__name__)
EMBEDDED_CONFIG_KEY = "easel.diffusers"
PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction"}


def tokenizers_for(family: Family) -> dict:
    """Fresh copies per pipeline: textual inversion adds tokens to a pipeline's tokenizer."""
    def tok(pad: str):
        return copy.deepcopy(clip_tokenizer(pad))

    if family.refiner:
        return {"tokenizer": None, "tokenizer_2": tok(PAD_OPEN_CLIP)}
    if family.arch == "sdxl":
        return {"tokenizer": tok(PAD_CLIP_L), "tokenizer_2": tok(PAD_OPEN_CLIP)}
    return {"tokenizer": tok(PAD_OPEN_CLIP if family.arch == "sd2" else PAD_CLIP_L)}


def scheduler_for(config_dir: Path, prediction: str):
    cfg = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    cls = getattr(diffusers, cfg.get("_class_name", "EulerDiscreteScheduler"))
    return cls.from_config(cfg, prediction_type=PREDICTION_TYPES[prediction])


def embedded_config_dir(path: Path, cache_dir: Path) -> Path | None:
    """Config folder for a file Easel wrote with its exact configs embedded, materialised once."""
    if path.suffix.lower() != ".safetensors":
        return None
    raw = read_header(path).metadata.get(EMBEDDED_CONFIG_KEY)
    if not raw:
        return None
    configs = json.loads(raw)
    folder = cache_dir / "configs" / hashlib.sha256(raw.encode()).hexdigest()[:16]
    if not _complete(folder, configs):
        _materialise(configs, folder)
    return folder


def _complete(folder: Path, configs: dict) -> bool:
    from webui.models.convert.checkpoint import config_file

    return all((folder / config_file(name)).is_file() for name in configs)


def _materialise(configs: dict, folder: Path) -> None:
    """Write the folder beside its place and rename it in, so another thread or process never reads it
    half-written; a complete folder is never removed. An incomplete one (an older Easel stopped while
    writing in place) is moved aside first."""
    from webui.models.convert import write_config_folder

    temp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    write_config_folder(configs, temp)
    if folder.exists() and not _complete(folder, configs):
        stale = temp.with_name(temp.name + ".stale")
        try:
            os.rename(folder, stale)
        except OSError:  # another writer moved it first
            pass
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(temp, folder)
    except OSError:  # another writer's complete folder is in place: the same configs
        shutil.rmtree(temp, ignore_errors=True)


def check_components(path: Path, family: Family) -> None:
    """Refuse a file that lacks a component before diffusers tries (its error names a class, not the cause)."""
    keys = read_header(path).tensors
    missing = [f"{name} ({prefix}*)" for name, prefix in component_prefixes(family).items() if not any(k.startswith(prefix) for k in keys)]
    if missing:
        raise CheckpointError(f"{path}: the file has no weights for {', '.join(missing)}; it cannot load as {family.name}")


def _extra_components(family: Family) -> dict:
    """Optional components left out: no safety checker (A1111 has none), IP-Adapter adds its own."""
    extra = {"image_encoder": None, "feature_extractor": None}
    if family.arch != "sdxl":
        extra.update(safety_checker=None, requires_safety_checker=False)
    return extra


def load_pipeline(entry: CheckpointEntry, dtype: torch.dtype, cache_dir: Path):
    """A verified pipeline for `entry`; CheckpointError naming the file on any failure."""
    det = entry.detection
    if not det.known:
        raise CheckpointError(f"{entry.path}: cannot load: {det.reason}")
    family = FAMILIES[det.family]
    pipeline_cls = getattr(diffusers, family.pipeline)
    try:
        if entry.format == "diffusers":
            pipe = _load_folder(pipeline_cls, entry.path, family, det.prediction or family.default_prediction, dtype)
        else:
            check_components(entry.path, family)
            config_dir = embedded_config_dir(entry.path, cache_dir) or family.config_dir
            components = {**tokenizers_for(family), **_extra_components(family)}
            components["scheduler"] = scheduler_for(config_dir, det.prediction or family.default_prediction)
            pipe = pipeline_cls.from_single_file(
                str(entry.path), config=str(config_dir), local_files_only=True, torch_dtype=dtype, **components
            )
    except CheckpointError:
        raise
    except Exception as e:  # diffusers/transformers raise many types for a bad file
        first_line = (str(e).strip().splitlines() or [""])[0]  # diffusers appends code samples for developers
        raise CheckpointError(f"{entry.path}: failed to load as {family.name}: {type(e).__name__}: {first_line}") from e
    verify_pipeline(pipe, family, dtype, entry.path)
    return pipe


def _load_folder(pipeline_cls, folder: Path, family: Family, prediction: str, dtype: torch.dtype):
    components = _extra_components(family)
    for name, tok in tokenizers_for(family).items():
        if tok is not None and not (folder / name / "vocab.json").is_file() and not (folder / name / "tokenizer.json").is_file():
            log.info("%s: no %s files, using Easel's CLIP tokenizer", folder, name)
            components[name] = tok
    if (folder / "scheduler" / "scheduler_config.json").is_file():
        components["scheduler"] = scheduler_for(folder, prediction)
    return pipeline_cls.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype, **components)
