"""Live previews of the latents while a job runs.

Cheap by default: a linear latent -> RGB map (A1111's "Approx cheap" coefficients), a few
microseconds per step. When a TAESD file is in `models/VAE-approx` (`easel download taesd`, or
`taesdxl*.safetensors` for SDXL) it decodes with that tiny autoencoder instead: sharper, a few ms."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

# rows: latent channels, columns: R, G, B (A1111 modules/sd_vae_approx.py cheap_approximation)
SD_COEFFS = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
SDXL_COEFFS = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088))


def cheap_preview(latents: torch.Tensor, arch: str) -> Image.Image:
    """The first image of a latent batch as an RGB picture at latent resolution (1/8 size)."""
    coeffs = torch.tensor(SDXL_COEFFS if arch == "sdxl" else SD_COEFFS, dtype=torch.float32)
    rgb = torch.einsum("lxy,lr->rxy", latents[0].detach().float().cpu(), coeffs)
    arr = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


def find_taesd(folder: Path, arch: str) -> Path | None:
    """`taesdxl*.safetensors` for SDXL, `taesd*.safetensors` (not xl) for SD1/SD2."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.safetensors")):
        name = path.name.lower()
        if name.startswith("taesdxl") if arch == "sdxl" else name.startswith("taesd") and not name.startswith("taesdxl"):
            return path
    return None


class TaesdPreviewer:
    """TAESD decoder loaded once per file; falls back to the cheap map if the file is unusable."""

    def __init__(self, path: Path, device: torch.device | str = "cpu"):
        from diffusers import AutoencoderTiny
        from safetensors.torch import load_file

        self.path = path
        model = AutoencoderTiny()
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
        if missing or unexpected:
            raise ValueError(f"{path.name}: not a TAESD (diffusers AutoencoderTiny) file: "
                             f"{len(missing)} missing, {len(unexpected)} unexpected weights")
        self.model = model.to(device).eval()

    def __call__(self, latents: torch.Tensor) -> Image.Image:
        with torch.no_grad():
            x = self.model.decoder(latents[:1].to(self.model.device, torch.float32))
        arr = ((x[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(arr))


class Previewer:
    """Chooses TAESD when present for the model's architecture, else the cheap approximation."""

    def __init__(self, approx_dir: Path):
        self.approx_dir = approx_dir
        self._taesd: dict[Path, TaesdPreviewer | None] = {}

    def __call__(self, latents: torch.Tensor, arch: str) -> Image.Image:
        path = find_taesd(self.approx_dir, arch)
        if path is not None:
            if path not in self._taesd:
                try:
                    self._taesd[path] = TaesdPreviewer(path)
                except Exception as e:  # a bad preview model must never fail a job
                    log.warning("live previews: %s; using the cheap approximation", e)
                    self._taesd[path] = None
            taesd = self._taesd[path]
            if taesd is not None:
                return taesd(latents)
        return cheap_preview(latents, arch)
