"""External VAEs (models/VAE) and a decode that never returns NaN/black images in fp16.

SD1 and SDXL VAEs have identical tensor shapes, so a VAE file is loaded with the *checkpoint's*
VAE config (its scaling factor and upcast flag). "Automatic" picks a VAE named like the checkpoint,
as A1111 does: `<ckpt>.vae.safetensors` beside it, or `<ckpt>.safetensors` in models/VAE."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from webui.models.header import CheckpointError, read_header

log = logging.getLogger(__name__)
VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt")
AUTOMATIC, NONE = "Automatic", "None"


@dataclass(frozen=True)
class VaeEntry:
    name: str  # relative to its folder, with extension (A1111's sd_vae value)
    path: Path


def list_vaes(folders: tuple[Path, ...]) -> list[VaeEntry]:
    found = []
    for root in folders:
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and p.suffix.lower() in VAE_SUFFIXES and not p.name.startswith("."):
                    found.append(VaeEntry(p.relative_to(root).as_posix(), p))
    return found


def _stem(name: str) -> str:
    stem = Path(name).name
    for suffix in VAE_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem.removesuffix(".vae")


def resolve_vae(choice: str, checkpoint: Path, vaes: list[VaeEntry]) -> Path | None:
    """The VAE file for a choice of "Automatic", "None" or a VAE name; None means the built-in one."""
    if choice in ("", NONE):
        return None
    if choice == AUTOMATIC:
        for suffix in VAE_SUFFIXES:
            beside = checkpoint.with_name(_stem(checkpoint.name) + ".vae" + suffix)
            if beside.is_file():
                return beside
        ckpt = _stem(checkpoint.name)
        return next((v.path for v in vaes if _stem(v.name) == ckpt), None)
    for v in vaes:
        if choice in (v.name, _stem(v.name)):
            return v.path
    known = ", ".join(v.name for v in vaes) or "none"
    raise CheckpointError(f"VAE {choice!r} not found in models/VAE (found: {known})")


def load_vae(path: Path, config_dir: Path, dtype: torch.dtype) -> AutoencoderKL:
    """An external VAE file (LDM or diffusers key layout) with the given checkpoint config."""
    header = read_header(path)  # clear errors for truncated/pickle-with-code files before diffusers
    if not any(k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in header.tensors):
        raise CheckpointError(f"{path}: not a VAE (no encoder/decoder weights)")
    try:
        vae = AutoencoderKL.from_single_file(
            str(path), config=str(config_dir), subfolder="vae", local_files_only=True, torch_dtype=dtype
        )
    except Exception as e:
        raise CheckpointError(f"{path}: failed to load as a VAE: {type(e).__name__}: {e}") from e
    meta = [n for n, p in vae.named_parameters() if p.is_meta]
    if meta:
        raise CheckpointError(f"{path}: VAE incomplete, {len(meta)} weights missing (e.g. {meta[0]})")
    return vae


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """`vae.decode` in the VAE's dtype; if that yields NaN/inf (SDXL's VAE in fp16), redo it in fp32."""
    scaled = latents / vae.config.scaling_factor
    with torch.no_grad():
        image = vae.decode(scaled.to(vae.dtype)).sample
        if torch.isfinite(image).all() or vae.dtype == torch.float32:
            return image
        log.warning("VAE produced NaN in %s; decoding again in float32 (use an fp16-fix VAE to avoid this)", vae.dtype)
        dtype = vae.dtype
        vae.to(torch.float32)
        try:
            return vae.decode(scaled.float()).sample
        finally:
            vae.to(dtype)
