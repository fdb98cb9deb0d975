"""The SDXL refiner as a latent continuation: the base pipeline stops at `denoising_end = switch_at`
and returns latents; the refiner continues from `denoising_start = switch_at` on those latents, with
no decode/encode in between (diffusers' "ensemble of expert denoisers").

Noise for the refiner's steps comes from a fresh CPU generator per image seeded with that image's
seed, so a seed means the same picture on any device."""

from __future__ import annotations

import inspect
from typing import Any

import diffusers
import torch

from webui.generation.prompt_encoding import encode_prompts
from webui.generation.prompt_parser import extract_extra_networks
from webui.generation.samplers import build_scheduler


def refiner_kwargs(pipeline, opts: dict[str, Any]) -> dict[str, Any] | None:
    """`denoising_end` for the base run when a refiner follows (SDXL pipelines only)."""
    if not opts.get("refiner"):
        return None
    switch_at = float(opts.get("switch_at", 0.8))
    if not 0.0 < switch_at < 1.0:
        raise ValueError(f"refiner switch at must be between 0 and 1 (exclusive), got {switch_at}")
    if "denoising_end" not in inspect.signature(pipeline.__call__).parameters:
        raise ValueError(f"a refiner follows only SDXL models; {type(pipeline).__name__} cannot hand over latents")
    return {"denoising_end": switch_at}


def refine(latents: torch.Tensor, request, model, manager, seeds: list[int], opts: dict[str, Any]) -> torch.Tensor:
    """Run the refiner checkpoint from `switch_at` to the end on the base run's latents."""
    refiner = manager.load(opts["refiner"], vae=opts.get("vae") or "Automatic")
    if refiner.family.arch != "sdxl":
        raise ValueError(f"refiner {refiner.entry.name!r} is {refiner.family.name}, not an SDXL model")
    scheduler = build_scheduler(refiner.pipeline.scheduler.config, request.sampler, request.schedule_type,
                                seed=seeds, steps=request.steps)
    pipe = diffusers.StableDiffusionXLImg2ImgPipeline.from_pipe(refiner.pipeline, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    prompt, _ = extract_extra_networks(request.prompt)
    negative, _ = extract_extra_networks(request.negative_prompt)
    n = latents.shape[0]
    cond = encode_prompts(pipe, [prompt] * n, [negative] * n, request.clip_skip)
    out = pipe(
        image=latents,
        denoising_start=float(opts.get("switch_at", 0.8)),
        num_inference_steps=request.steps,
        guidance_scale=request.cfg_scale,
        prompt_embeds=cond.prompt_embeds,
        negative_prompt_embeds=cond.negative_prompt_embeds,
        pooled_prompt_embeds=cond.pooled_prompt_embeds,
        negative_pooled_prompt_embeds=cond.negative_pooled_prompt_embeds,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        output_type="latent",
    )
    return out.images
