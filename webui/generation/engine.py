"""The engine: runs a `GenerationRequest` on the shared model manager, one job at a time per device.

A job: load (or reuse) the model, validate the request against its family, build this job's
scheduler and pipeline over the shared weights, then per batch draw the noise on CPU generators,
encode the prompts A1111's way, call diffusers with `output_type="latent"`, decode (NaN-checked),
paste inpaint results back, write infotext and save. Progress goes to a listener; `JobControl`
interrupts or skips from any thread."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from webui.generation import modes
from webui.generation.params import infotext_for
from webui.generation.pipelines import job_pipeline, route
from webui.generation.previews import Previewer
from webui.generation.progress import JobControl, JobQueue, Listener, ProgressEvent, StepClock
from webui.generation.prompt_encoding import encode_prompts
from webui.generation.prompt_parser import ExtraNetworkCall, extract_extra_networks
from webui.generation.request import GenerationLimits, GenerationRequest, Mode, RequestError
from webui.generation.samplers import build_scheduler, find_schedule_type, split_sampler_name
from webui.generation.saving import dated_folder, save_image
from webui.generation.seeds import image_noise, job_seeds
from webui.models.manager import LoadedModel, ModelManager
from webui.models.vae import AUTOMATIC, decode

log = logging.getLogger(__name__)

NAN_ADVICE = ("This can happen in float16/bfloat16 when the values overflow: run with --precision float32, "
              "or use an fp16-fix VAE for SDXL.")


class NansException(RuntimeError):
    """The UNet or the VAE produced NaN (A1111's name for the same failure)."""


@dataclass(frozen=True)
class EngineOptions:
    limits: GenerationLimits = GenerationLimits()
    save_images: bool = True
    samples_format: str = "png"
    outdir: Path | None = None  # images straight into this folder instead of outputs/<mode>-images/<date>/
    preview_every: int = 0  # a live preview every N steps; 0 = none


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    subseed: int
    infotext: str
    path: Path | None = None


@dataclass
class GenerationResult:
    request: GenerationRequest  # validated, with the seeds actually used
    model: LoadedModel
    images: list[GeneratedImage] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    extra_networks: list[ExtraNetworkCall] = field(default_factory=list)
    interrupted: bool = False
    job_id: str = ""

    @property
    def seeds(self) -> list[int]:
        return [g.seed for g in self.images]

    @property
    def infotexts(self) -> list[str]:
        return [g.infotext for g in self.images]

    @property
    def paths(self) -> list[Path]:
        return [g.path for g in self.images if g.path is not None]


class Engine:
    def __init__(self, manager: ModelManager, options: EngineOptions | None = None):
        self.manager = manager
        self.options = options or EngineOptions()
        self.queue = JobQueue()
        self.previewer = Previewer(manager.paths.folder("vae_approx"))

    def generate(
        self,
        request: GenerationRequest,
        listener: Listener | None = None,
        control: JobControl | None = None,
    ) -> GenerationResult:
        """Run a job when its turn comes. Raises `RequestError` (bad request), `SamplerError`,
        `PromptError`, `CheckpointError` or `NansException`; never leaves the model patched."""
        control = control or JobControl()
        with self.queue.slot(control):
            return self._run(request, listener or (lambda event: None), control)

    def _run(self, request: GenerationRequest, listener: Listener, control: JobControl) -> GenerationResult:
        overrides = request.override_settings
        checkpoint = overrides.get("sd_model_checkpoint") or request.checkpoint
        loaded = self.manager.load(checkpoint, vae=overrides.get("sd_vae") or AUTOMATIC)
        req, notices = request.validate(self.options.limits, loaded.family.default_size)
        if "CLIP_stop_at_last_layers" in overrides:
            req.clip_skip = int(overrides["CLIP_stop_at_last_layers"])
        sampler, legacy_schedule = split_sampler_name(req.sampler)  # canonical names for the infotext
        req.sampler = sampler.name
        req.schedule_type = (legacy_schedule or find_schedule_type(req.schedule_type)).label
        seeds = job_seeds(req.seed, req.subseed, req.images_total)
        req.seed, req.subseed = seeds.seeds[0], seeds.subseeds[0]
        prompt, networks = extract_extra_networks(req.prompt)
        negative, _ = extract_extra_networks(req.negative_prompt)
        way = route(loaded.family, req.mode)
        if req.subseed_strength > 0 and not (req.mode is Mode.TXT2IMG and way.pipeline_mode == "txt2img"):
            raise RequestError("variation seeds (subseed strength > 0) work in txt2img only for now")
        strength = 1.0 if way.from_noise else req.denoising_strength
        if way.pipeline_mode != "txt2img" and int(req.steps * strength) < 1:
            raise RequestError(f"denoising strength {strength} x {req.steps} steps leaves no step to run; "
                               "raise one of them")
        first_seeds = seeds.seeds[: req.batch_size]
        pipe = job_pipeline(loaded.pipeline, loaded.family, way.pipeline_mode, self._scheduler(loaded, req, first_seeds))
        pipe.set_progress_bar_config(disable=True)  # progress goes to the listener
        inputs = modes.prepare_inputs(req, way, pipe)
        notices += inputs.notices
        result = GenerationResult(req, loaded, notices=notices, extra_networks=networks, job_id=control.job_id)
        model_info = self._model_info(loaded)
        cond = encode_prompts(pipe, [prompt] * req.batch_size, [negative] * req.batch_size, req.clip_skip)
        clock = StepClock(req.batch_count * max(int(req.steps * strength), 1))
        for batch in range(req.batch_count):
            if control.interrupted:
                break
            first = batch * req.batch_size
            batch_seeds = seeds.seeds[first : first + req.batch_size]
            batch_subseeds = seeds.subseeds[first : first + req.batch_size]
            if batch:
                pipe.scheduler = self._scheduler(loaded, req, batch_seeds)  # fresh state: SDE noise, solver history
            kwargs, generators = self._call_kwargs(req, loaded, way, pipe, inputs, batch_seeds, batch_subseeds,
                                                  cond.prompt_embeds.dtype)
            kwargs.update(_cond_kwargs(cond))
            kwargs["callback_on_step_end"] = self._step_callback(req, loaded, control, listener, clock, batch)
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
            latents = pipe(**kwargs).images
            if control.skipped:
                control.clear_skip()
                continue
            images = self._decode(loaded, latents)
            for i, image in enumerate(images):
                image = inputs.finish(image)
                info = infotext_for(req, batch_seeds[i], batch_subseeds[i], model_info, networks)
                result.images.append(GeneratedImage(image, batch_seeds[i], batch_subseeds[i], info))
                self._save(result, result.images[-1])
        result.interrupted = control.interrupted
        return result

    def _scheduler(self, loaded: LoadedModel, req: GenerationRequest, seeds: list[int]):
        return build_scheduler(loaded.pipeline.scheduler.config, req.sampler, req.schedule_type, seed=seeds,
                               steps=req.steps)

    def _call_kwargs(self, req, loaded, way, pipe, inputs, seeds, subseeds, dtype) -> tuple[dict, list[torch.Generator]]:
        kwargs: dict = dict(num_inference_steps=req.steps, guidance_scale=req.cfg_scale, output_type="latent")
        if way.pipeline_mode == "txt2img":
            shape = (pipe.unet.config.in_channels, req.height // 8, req.width // 8)
            noises, generators = zip(*(
                image_noise(shape, s, sub, req.subseed_strength, (req.seed_resize_from_w, req.seed_resize_from_h))
                for s, sub in zip(seeds, subseeds)
            ))
            # diffusers moves latents to the execution device; the dtype must be the model's (the embeddings')
            kwargs.update(latents=torch.stack(noises).to(dtype), height=req.height, width=req.width)
        else:
            generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
            kwargs.update(inputs.pipeline_kwargs(pipe, req, seeds, way))
        kwargs["generator"] = list(generators)
        if loaded.family.arch == "sdxl":
            kwargs.update(modes.sdxl_kwargs(req, way))
        return kwargs, list(generators)

    def _step_callback(self, req, loaded, control: JobControl, listener: Listener, clock: StepClock, batch: int) -> Callable:
        every = self.options.preview_every
        arch = loaded.family.arch

        def on_step_end(pipe, i, t, tensors):
            steps = getattr(pipe, "num_timesteps", None) or req.steps
            clock.job_steps = max(clock.job_steps, steps * req.batch_count)
            elapsed, eta = clock.tick()
            preview = None
            if every and (i + 1) % every == 0 and "latents" in tensors:
                preview = self.previewer(tensors["latents"], arch)
            listener(ProgressEvent(control.job_id, i + 1, steps, batch, req.batch_count, clock.done,
                                   clock.job_steps, elapsed, eta, preview))
            if control.interrupted or control.skipped:
                pipe._interrupt = True  # diffusers' documented way to stop the denoising loop early
            return {}

        return on_step_end

    def _decode(self, loaded: LoadedModel, latents: torch.Tensor) -> list[Image.Image]:
        if not torch.isfinite(latents).all():
            raise NansException(f"A tensor with NaNs was produced in the UNet ({latents.dtype}). {NAN_ADVICE}")
        pixels = decode(loaded.pipeline.vae, latents)
        if not torch.isfinite(pixels).all():
            raise NansException(f"A tensor with NaNs was produced in the VAE. {NAN_ADVICE}")
        arr = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]

    def _model_info(self, loaded: LoadedModel) -> dict:
        entry = loaded.entry
        if entry.format != "diffusers":
            try:
                entry = self.manager.registry.with_hash(entry)
            except OSError as e:
                log.warning("model hash not available: %s", e)
        vae = Path(loaded.vae) if loaded.vae else None
        vae_hash = self.manager.hashes.compute(vae)[:10] if vae else None
        return {"Model hash": entry.hash10, "Model": entry.model_name, "VAE hash": vae_hash,
                "VAE": vae.name if vae else None}

    def _save(self, result: GenerationResult, item: GeneratedImage) -> None:
        opts = self.options
        if not opts.save_images:
            return
        folder = opts.outdir or dated_folder(self.manager.paths.outputs_dir, result.request.mode.value, datetime.date.today())
        try:
            item.path = save_image(item.image, folder, item.seed, item.infotext, opts.samples_format)
        except (OSError, ValueError) as e:  # ValueError: an infotext too long for JPEG EXIF
            message = f"could not save the image: {e}"
            if message not in result.notices:
                result.notices.append(message)
            log.error(message)


def _cond_kwargs(cond) -> dict:
    kwargs = dict(prompt_embeds=cond.prompt_embeds, negative_prompt_embeds=cond.negative_prompt_embeds)
    if cond.pooled_prompt_embeds is not None:
        kwargs.update(pooled_prompt_embeds=cond.pooled_prompt_embeds,
                      negative_pooled_prompt_embeds=cond.negative_pooled_prompt_embeds)
    return kwargs

