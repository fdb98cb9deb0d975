"""The well-known models `easel download NAME` knows, with the sha256 and size each file must have.

Every checksum here was read from public sources that pin the same Hub file (model catalogs, install
scripts and A1111 logs that quote the Hub's LFS SHA256); none is guessed. An entry without one
(`sha256=None`) is still verified, against the sha256 the Hub sends as `X-Linked-Etag`.
Revisions stay "main": when upstream replaces a file, the pinned checksum fails loudly instead of a
different model arriving silently."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CatalogEntry:
    """One file in one Hub repository and where it lands (`folder` is a `Paths.folder` kind)."""

    name: str
    repo_id: str
    filename: str  # path inside the repository
    folder: str  # "checkpoints" | "vae" | "vae_approx" | ...
    dest_name: str  # file name inside that folder; A1111 lists it by this name
    revision: str = "main"
    size: int | None = None
    sha256: str | None = None
    description: str = ""

    def url(self, endpoint: str) -> str:
        """The Hub's `resolve` URL: it answers with the file, or a redirect to the CDN holding it."""
        return (
            f"{endpoint.rstrip('/')}/{self.repo_id}/resolve/"
            f"{quote(self.revision, safe='')}/{quote(self.filename, safe='/')}"
        )


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            "sd15",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "v1-5-pruned-emaonly.safetensors",
            "checkpoints",
            "v1-5-pruned-emaonly.safetensors",
            size=4_265_146_304,
            sha256="6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
            description="Stable Diffusion 1.5, EMA weights only (A1111 hash 6ce0161689)",
        ),
        CatalogEntry(
            "sdxl-base",
            "stabilityai/stable-diffusion-xl-base-1.0",
            "sd_xl_base_1.0.safetensors",
            "checkpoints",
            "sd_xl_base_1.0.safetensors",
            size=6_938_078_334,
            sha256="31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
            description="SDXL 1.0 base",
        ),
        CatalogEntry(
            "sdxl-refiner",
            "stabilityai/stable-diffusion-xl-refiner-1.0",
            "sd_xl_refiner_1.0.safetensors",
            "checkpoints",
            "sd_xl_refiner_1.0.safetensors",
            size=6_075_981_930,
            sha256="7440042bbdc8a24813002c09b6b69b64dc90fded4472613437b7f55f9b7d9c5f",
            description="SDXL 1.0 refiner",
        ),
        CatalogEntry(
            "sdxl-turbo",
            "stabilityai/sdxl-turbo",
            "sd_xl_turbo_1.0_fp16.safetensors",
            "checkpoints",
            "sd_xl_turbo_1.0_fp16.safetensors",
            size=6_938_081_905,
            sha256="e869ac7d6942cb327d68d5ed83a40447aadf20e0c3358d98b2cc9e270db0da26",
            description="SDXL Turbo, 1-4 steps (non-commercial licence)",
        ),
        CatalogEntry(
            "ssd-1b",
            "segmind/SSD-1B",
            "SSD-1B-A1111.safetensors",  # the repo's single file in A1111 layout
            "checkpoints",
            "SSD-1B-A1111.safetensors",
            size=4_465_671_322,
            sha256="1895a00bfc769a00b0c0c43a95e433e79e9db8a85402b45a33e8448785bde94d",
            description="Segmind SSD-1B, distilled SDXL",
        ),
        CatalogEntry(
            "vega",
            "segmind/Segmind-Vega",
            "segmind-vega.safetensors",
            "checkpoints",
            "segmind-vega.safetensors",
            size=3_293_395_670,
            sha256="94762e983e5942056be73c5c1d4464b8ffa1ada500b4fef1267550e2447953ce",
            description="Segmind Vega, distilled SDXL",
        ),
        CatalogEntry(
            "sdxl-vae-fp16-fix",
            "madebyollin/sdxl-vae-fp16-fix",
            # The repo has sdxl.vae.safetensors and sdxl_vae.safetensors (same size); the published
            # checksum is for this spelling.
            "sdxl_vae.safetensors",
            "vae",
            "sdxl-vae-fp16-fix.safetensors",
            size=334_641_162,
            sha256="235745af8d86bf4a4c1b5b4f529868b37019a10f7c0b2e79ad0abca3a22bc6e1",
            description="SDXL VAE that does not overflow in fp16",
        ),
        CatalogEntry(
            "taesd",
            "madebyollin/taesd",
            # diffusers AutoencoderTiny layout, encoder and decoder in one safetensors file. A1111
            # itself fetches taesd_decoder.pth from GitHub into models/VAE-taesd.
            "diffusion_pytorch_model.safetensors",
            "vae_approx",
            "taesd.safetensors",
            size=9_793_292,
            sha256="db169d69145ec4ff064e49d99c95fa05d3eb04ee453de35824a6d0f325513549",
            description="Tiny autoencoder for fast SD1 previews",
        ),
    )
}
