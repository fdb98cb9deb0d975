"""The SDXL refiner as a latent continuation: the base pipeline stops at `denoising_end = switch_at`
and returns latents; the refiner continues from `denoising_start = switch_at` on those latents, with
no decode/encode in between (diffusers' "ensemble of expert denoisers"). The engine then decodes with
the job's model's VAE (the one the request chose; SDXL refiners ship the same VAE as the base).

Noise for the refiner's steps comes from a fresh CPU generator per image seeded with that image's
seed, so a seed means the same picture on any device."""

from __future__ import annotations

import inspect
from typing import Any

import diffusers
import torch

from webui.generation.modes import sdxl_kwargs
from webui.generation.pipelines import Route
from webui.generation.prompt_encoding import encode_prompts
from webui.generation.prompt_parser import extract_extra_networks
from webui.generation.samplers import build_scheduler
from webui.models.families import FAMILIES

DEFAULT_SWITCH_AT = 0.8  # A1111's default


def switch_at(opts: dict[str, Any]) -> float:
    value = opts.get("switch_at", DEFAULT_SWITCH_AT)
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = None
    if fraction is None or not 0.0 < fraction < 1.0:  # also refuses NaN
        raise ValueError(f"refiner switch at must be a number between 0 and 1 (exclusive), got {value!r}")
    return fraction


def _refiner_problem(name: str, family_name: str) -> str | None:
    family = FAMILIES.get(family_name)
    if family is None or family.arch != "sdxl" or family.inpaint:
        return f"refiner {name!r} is {family_name}: a refiner must be an SDXL model (refiner or base), not inpainting"
    return None


def check_refiner(opts: dict[str, Any], model, manager) -> None:
    """Refuse refiner options the job cannot use before any step runs (else the base run is wasted)."""
    if not opts.get("refiner"):
        return
    switch_at(opts)
    if model.family.arch != "sdxl":
        raise ValueError(f"a refiner continues an SDXL model's latents, but {model.entry.model_name!r} is "
                         f"{model.family.name}: choose an SDXL checkpoint or remove the refiner")
    entry = manager.find(opts["refiner"])
    problem = _refiner_problem(entry.name, entry.detection.family)
    if problem:
        raise ValueError(problem)


def refiner_kwargs(pipeline, opts: dict[str, Any]) -> dict[str, Any] | None:
    """`denoising_end` for the base run when a refiner follows (SDXL pipelines only)."""
    if not opts.get("refiner"):
        return None
    fraction = switch_at(opts)
    if "denoising_end" not in inspect.signature(pipeline.__call__).parameters:
        raise ValueError(f"a refiner continues SDXL latents only; {type(pipeline).__name__} cannot hand over latents")
    return {"denoising_end": fraction}


def refine(latents: torch.Tensor, request, model, manager, seeds: list[int], opts: dict[str, Any],
           vae: str, step_callback=None) -> torch.Tensor:
    """Run the refiner checkpoint from `switch_at` to the end on the base run's latents; `step_callback`
    (the job's) reports its steps and stops it on Interrupt/Skip."""
    refiner = manager.load(opts["refiner"], vae=vae)
    problem = _refiner_problem(refiner.entry.name, refiner.family.name)
    if problem:
        raise ValueError(problem)
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
        denoising_start=switch_at(opts),
        num_inference_steps=request.steps,
        guidance_scale=request.cfg_scale,
        prompt_embeds=cond.prompt_embeds,
        negative_prompt_embeds=cond.negative_prompt_embeds,
        pooled_prompt_embeds=cond.pooled_prompt_embeds,
        negative_pooled_prompt_embeds=cond.negative_pooled_prompt_embeds,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        output_type="latent",
        callback_on_step_end=step_callback,
        callback_on_step_end_tensor_inputs=["latents"],
        **sdxl_kwargs(request, Route("img2img")),  # the request's micro-conditioning and aesthetic scores
    )
    return out.images
