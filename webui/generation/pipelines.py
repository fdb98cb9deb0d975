"""Which diffusers pipeline runs a job, built over the loaded weights with `from_pipe` (no copy).

Each job gets its own pipeline object with its own scheduler, so nothing shared is mutated while a
job runs. Models whose native mode is not the requested one are driven the way A1111 drives them:

- inpainting checkpoints (9 input channels) run txt2img and img2img through the inpaint pipeline with
  a full mask (A1111 conditions them on an all-masked image the same way);
- the SDXL refiner has no txt2img path in diffusers: txt2img starts img2img at strength 1 from a grey
  image, which is the same as starting from pure noise.

img2img and inpaint jobs run `noise_pipelines`' subclasses of diffusers' pipelines, which take their
random draws from the job's noise streams when it has variation seeds (else they are diffusers' own)."""

from __future__ import annotations

from dataclasses import dataclass

import diffusers

from webui.generation import noise_pipelines
from webui.generation.request import Mode
from webui.models.families import Family

_CLASSES: dict[tuple[str, str], type[diffusers.DiffusionPipeline]] = {
    ("sd", "txt2img"): diffusers.StableDiffusionPipeline,
    ("sd", "img2img"): noise_pipelines.NoiseStreamImg2ImgPipeline,
    ("sd", "inpaint"): noise_pipelines.NoiseStreamInpaintPipeline,
    ("sdxl", "txt2img"): diffusers.StableDiffusionXLPipeline,
    ("sdxl", "img2img"): noise_pipelines.NoiseStreamXLImg2ImgPipeline,
    ("sdxl", "inpaint"): noise_pipelines.NoiseStreamXLInpaintPipeline,
}


@dataclass(frozen=True)
class Route:
    """How a (family, requested mode) pair runs."""

    pipeline_mode: str  # "txt2img" | "img2img" | "inpaint": the diffusers pipeline kind used
    full_mask: bool = False  # inpaint pipeline used for a job without a mask
    from_noise: bool = False  # img2img pipeline used for txt2img (strength 1 from a grey image)


def route(family: Family, mode: Mode) -> Route:
    if family.inpaint and mode is not Mode.INPAINT:
        return Route("inpaint", full_mask=True, from_noise=mode is Mode.TXT2IMG)
    if family.refiner and mode is Mode.TXT2IMG:
        return Route("img2img", from_noise=True)
    return Route(mode.value)


def pipeline_class(family: Family, pipeline_mode: str) -> type:
    kind = "sdxl" if family.arch == "sdxl" else "sd"
    return _CLASSES[(kind, pipeline_mode)]


def job_pipeline(base, family: Family, pipeline_mode: str, scheduler):
    """A pipeline of the right class sharing `base`'s modules, with this job's scheduler."""
    cls = pipeline_class(family, pipeline_mode)
    extra = {}
    if family.refiner:
        extra["requires_aesthetics_score"] = True
    return cls.from_pipe(base, scheduler=scheduler, **extra)
