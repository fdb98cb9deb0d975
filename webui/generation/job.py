"""One job from request to saved images, with the extension hooks at their documented points:

select_model -> before_generate -> validate -> job_pipeline -> [prepare_pipeline wrappers around: pipeline_kwargs,
per batch: denoise (step_end each step) -> after_denoising -> decode -> postprocess_image ->
infotext (infotext_params) -> before_image_saved -> save -> image_saved]."""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from webui.generation import modes
from webui.generation.noise_pipelines import NoiseStreamPipeline
from webui.generation.params import infotext_for
from webui.generation.pipelines import job_pipeline, route
from webui.generation.progress import JobControl, Listener, ProgressEvent, StepClock
from webui.generation.prompt_encoding import encode_prompts
from webui.generation.prompt_parser import extract_extra_networks
from webui.generation.request import GenerationRequest, RequestError
from webui.generation.results import GeneratedImage, GenerationResult, NansException
from webui.generation.samplers import build_scheduler, find_schedule_type, split_sampler_name
from webui.generation.saving import dated_folder, save_image
from webui.generation.seeds import NoiseStream, image_noise, job_seeds
from webui.hooktypes import ImageSaveParams, StepState
from webui.models.manager import LoadedModel
from webui.models.vae import decode
from webui.plugins import ExtensionError, raise_attributed

log = logging.getLogger(__name__)

NAN_ADVICE = ("This can happen in float16/bfloat16 when the values overflow: run with --precision float32, "
              "or use an fp16-fix VAE for SDXL.")
INFOTEXT_KEY = re.compile(r"\w[\w \-/]+")  # what A1111's infotext parser reads back as a key
RESERVED_KWARGS = {"latents", "generator", "callback_on_step_end", "callback_on_step_end_tensor_inputs", "output_type"}


class ExtensionConflict(RuntimeError):
    """Two extensions set the same pipeline argument."""


def _copy(request: GenerationRequest) -> GenerationRequest:
    """A copy hooks may change without touching the caller's request (nested dicts copied one level)."""
    ext = {k: dict(v) if isinstance(v, dict) else v for k, v in request.extensions.items()}
    return replace(request, extensions=ext, override_settings=dict(request.override_settings),
                   extra_networks={k: list(v) for k, v in request.extra_networks.items()})


class Job:
    def __init__(self, engine, request: GenerationRequest, listener: Listener, control: JobControl):
        self.engine, self.plugins, self.manager = engine, engine.plugins, engine.manager
        self.listener, self.control = listener, control
        self.request = _copy(request)
        self.notices: list[str] = []

    # ---- setup --------------------------------------------------------------------------------

    def run(self) -> GenerationResult:
        plugins, req = self.plugins, self.request
        loaded = plugins.first("select_model", request=req, manager=self.manager) or self.manager.load(None)
        self.model = loaded
        with self.manager.in_use(loaded):  # a model loaded during the job (a refiner) must not evict this one
            return self._run_on(loaded)

    def _run_on(self, loaded: LoadedModel) -> GenerationResult:
        plugins, req = self.plugins, self.request
        plugins.call_each("before_generate", request=req, model=loaded)
        if req.width is None or req.height is None:
            defaults = plugins.model_defaults(loaded)
            req.width = defaults.get("width") if req.width is None else req.width  # 0 stays 0: refused below
            req.height = defaults.get("height") if req.height is None else req.height
        req, notices = req.validate(self.engine.options.limits, loaded.family.default_size)
        self.request, self.notices = req, self.notices + notices
        if "CLIP_stop_at_last_layers" in req.override_settings:
            req.clip_skip = int(req.override_settings["CLIP_stop_at_last_layers"])
        sampler, legacy_schedule = split_sampler_name(req.sampler)  # canonical names for the infotext
        req.sampler = sampler.name
        req.schedule_type = (legacy_schedule or find_schedule_type(req.schedule_type)).label
        self.seeds = job_seeds(req.seed, req.subseed, req.images_total)
        req.seed, req.subseed = self.seeds.seeds[0], self.seeds.subseeds[0]
        self.prompt, calls = extract_extra_networks(req.prompt)
        self.negative, _ = extract_extra_networks(req.negative_prompt)
        self._group_networks(calls)
        self.way = route(loaded.family, req.mode)
        # img2img/inpaint pipelines draw their noise themselves: variation seeds go in through noise streams
        self.stream_noise = self.way.pipeline_mode != "txt2img" and _seed_variation(req)
        txt2img = self.way.from_noise or self.way.pipeline_mode == "txt2img"
        self.strength = 1.0 if txt2img else req.denoising_strength
        if self.way.pipeline_mode != "txt2img" and int(req.steps * self.strength) < 1:
            raise RequestError(f"denoising strength {self.strength} x {req.steps} steps leaves no step to run; "
                               "raise one of them")
        pipe = job_pipeline(loaded.pipeline, loaded.family, self.way.pipeline_mode,
                            self._scheduler(self.seeds.seeds[: req.batch_size]))
        pipe = plugins.first("job_pipeline", pipeline=pipe, request=req, model=loaded) or pipe
        pipe.set_progress_bar_config(disable=True)  # progress goes to the listener
        self.inputs = modes.prepare_inputs(req, self.way, pipe)
        self.notices += self.inputs.notices
        self.result = GenerationResult(req, loaded, notices=self.notices, job_id=self.control.job_id)
        self._run_wrapped(pipe)
        self.result.interrupted = self.control.interrupted
        return self.result

    def _group_networks(self, calls) -> None:
        known = self.plugins.extra_networks()
        for call in calls:
            if call.name in known:
                self.request.extra_networks.setdefault(call.name, []).append(call)
            else:
                self.notices.append(f"unknown extra network <{call.name}:...>: no extension handles it; ignored")

    def _run_wrapped(self, pipe) -> None:
        """Denoise inside every `prepare_pipeline` wrapper, so their undo runs even on failure."""

        def denoise_job(pipeline, request):
            try:
                self._denoise(pipeline)
            except BaseException as e:
                e._easel_job_error = True  # raised by the job itself, not by a wrapper
                raise

        self._guard("prepare_pipeline", lambda: self.plugins.hook.prepare_pipeline.call_extra(
            [denoise_job], {"pipeline": pipe, "request": self.request, "model": self.model, "manager": self.manager,
                           "notices": self.notices}))

    def _guard(self, hook: str, call):
        """Run a pluggy hook call; an exception from extension code is re-raised naming the extension."""
        try:
            return call()
        except ExtensionError:
            raise
        except Exception as e:
            if getattr(e, "_easel_job_error", False):
                raise
            name = self.plugins.culprit(e.__traceback__)
            if name is None:
                raise
            raise_attributed(e, name, hook)

    # ---- denoising ----------------------------------------------------------------------------

    def _denoise(self, pipe) -> None:
        req = self.request
        extra, owners = self._extension_kwargs(pipe)
        cond = encode_prompts(pipe, [self.prompt] * req.batch_size, [self.negative] * req.batch_size, req.clip_skip)
        info_extra: dict = {}
        for name, params in self.plugins.call_each("infotext_params", request=req, model=self.model,
                                                   manager=self.manager):
            bad = [k for k in params if not INFOTEXT_KEY.fullmatch(str(k))]
            if bad:
                raise_attributed(ValueError(f"infotext keys {bad} cannot be read back (letters, digits, spaces, - /)"),
                                 name, "infotext_params")
            info_extra.update(params)
        clock = StepClock(req.batch_count * max(int(req.steps * self.strength), 1))
        for batch in range(req.batch_count):
            if self.control.interrupted:
                break
            first = batch * req.batch_size
            seeds = self.seeds.seeds[first : first + req.batch_size]
            subseeds = self.seeds.subseeds[first : first + req.batch_size]
            if batch:
                pipe.scheduler = self._scheduler(seeds)  # fresh state: SDE noise trees, solver history
            kwargs = self._call_kwargs(pipe, seeds, subseeds, cond.prompt_embeds.dtype)
            kwargs.update(_cond_kwargs(cond))
            overlap = extra.keys() & kwargs.keys()
            if overlap:  # Easel sets these from the request; a silent override would lie in the infotext
                raise ExtensionConflict(f"extensions may not override the pipeline arguments {sorted(overlap)} "
                                        f"that Easel sets from the request (set by {sorted({owners[k] for k in overlap})})")
            kwargs.update(extra)
            kwargs["callback_on_step_end"] = self._step_callback(clock, batch)
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
            latents = pipe(**kwargs).images
            if self.control.skipped:
                self.control.clear_skip()
                continue
            if not self.control.interrupted:  # A1111 skips its second passes (refiner, hires) on interrupt too
                ran = _steps_run(pipe, req)  # a second pass continues the count
                latents = self.plugins.chain("after_denoising", "latents", latents, request=req, model=self.model,
                                             manager=self.manager, seeds=seeds,
                                             step_callback=self._step_callback(clock, batch, offset=ran))
                if self.control.skipped:  # skipped during a second pass: the batch is dropped all the same
                    self.control.clear_skip()
                    continue
            for i, image in enumerate(self._decode(latents)):
                image = self.plugins.chain("postprocess_image", "image", self.inputs.finish(image), request=req)
                info = infotext_for(req, seeds[i], subseeds[i], info_extra)
                item = GeneratedImage(image, seeds[i], subseeds[i], info)
                self.result.images.append(item)
                self._save(item)

    def _extension_kwargs(self, pipe) -> tuple[dict, dict[str, str]]:
        """The merged extension arguments and which extension set each."""
        merged: dict = {}
        owner: dict[str, str] = {}
        for name, kwargs in self.plugins.call_each("pipeline_kwargs", pipeline=pipe, request=self.request):
            for key, value in kwargs.items():
                if key in owner:
                    raise ExtensionConflict(f"extensions {owner[key]!r} and {name!r} both set the pipeline "
                                            f"argument {key!r}; disable one of them for this job")
                if key in RESERVED_KWARGS:
                    raise ExtensionConflict(f"extension {name!r} may not set the pipeline argument {key!r}")
                owner[key], merged[key] = name, value
        return merged, owner

    def _scheduler(self, seeds: list[int]):
        req = self.request
        return build_scheduler(self.model.pipeline.scheduler.config, req.sampler, req.schedule_type, seed=seeds,
                               steps=req.steps)

    def _call_kwargs(self, pipe, seeds, subseeds, dtype) -> dict:
        req, way = self.request, self.way
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
            streams = [NoiseStream(s, sub, req.subseed_strength, (req.seed_resize_from_w, req.seed_resize_from_h))
                       for s, sub in zip(seeds, subseeds)]
            generators = [stream.generator for stream in streams]
            if self.stream_noise:
                if not isinstance(pipe, NoiseStreamPipeline):
                    raise RequestError(f"variation seeds and 'resize seed from' in {req.mode.value} need Easel's "
                                       f"own pipeline, but an extension runs this job on {type(pipe).__name__}")
                pipe.noise_streams = streams
            kwargs.update(self.inputs.pipeline_kwargs(pipe, req, seeds, way))
        kwargs["generator"] = list(generators)
        if self.model.family.arch == "sdxl":
            kwargs.update(modes.sdxl_kwargs(req, way))
        return kwargs

    def _step_callback(self, clock: StepClock, batch: int, offset: int = 0):
        """diffusers' `callback_on_step_end` for one denoising pass of a batch: progress, `step_end`, live
        previews, Interrupt/Skip. `offset`: the steps an earlier pass of the batch ran (a refiner's steps
        continue the count)."""
        req, control, every = self.request, self.control, self.engine.options.preview_every
        arch = self.model.family.arch

        def on_step_end(pipe, i, t, tensors):
            steps = offset + _steps_run(pipe, req)
            step = offset + i + 1
            clock.job_steps = max(clock.job_steps, steps * req.batch_count)
            elapsed, eta = clock.tick()
            latents = tensors.get("latents")
            state = StepState(control.job_id, step, steps, batch, t, latents, pipe, req)
            self.plugins.call_each("step_end", state=state)
            preview = None
            if every and step % every == 0 and state.latents is not None:
                preview = self.engine.previewer(state.latents, arch)
            self.listener(ProgressEvent(control.job_id, step, steps, batch, req.batch_count, clock.done,
                                        clock.job_steps, elapsed, eta, preview))
            if control.interrupted or control.skipped:
                pipe._interrupt = True  # diffusers' documented way to stop the denoising loop early
            return {"latents": state.latents} if state.latents is not latents else {}

        return on_step_end

    def _decode(self, latents: torch.Tensor) -> list[Image.Image]:
        if not torch.isfinite(latents).all():
            raise NansException(f"A tensor with NaNs was produced in the UNet ({latents.dtype}). {NAN_ADVICE}")
        pixels = decode(self.model.pipeline.vae, latents)
        if not torch.isfinite(pixels).all():
            raise NansException(f"A tensor with NaNs was produced in the VAE. {NAN_ADVICE}")
        arr = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]

    # ---- saving -------------------------------------------------------------------------------

    def _save(self, item: GeneratedImage) -> None:
        opts, req = self.engine.options, self.request
        if not (opts.save_images if req.save is None else req.save):
            return
        folder = opts.outdir or dated_folder(self.manager.paths.outputs_dir, req.mode.value, datetime.date.today())
        params = ImageSaveParams(item.image, item.infotext, folder, item.seed, opts.samples_format, req)
        self.plugins.call_each("before_image_saved", params=params)
        if params.skip:
            return
        try:
            item.path = save_image(params.image, params.folder, params.seed, params.infotext, params.format)
        except (OSError, ValueError) as e:  # ValueError: an infotext too long for JPEG EXIF
            message = f"could not save the image: {e}"
            if message not in self.notices:
                self.notices.append(message)
            log.error(message)
            return
        self.plugins.call_each("image_saved", path=item.path, request=req)


def _seed_variation(req: GenerationRequest) -> bool:
    """Whether the initial noise differs from the plain seed's: a variation seed, or "resize seed from" another
    latent size."""
    w, h = req.seed_resize_from_w, req.seed_resize_from_h
    resized = w > 0 and h > 0 and (w // 8, h // 8) != (req.width // 8, req.height // 8)
    return req.subseed_strength > 0 or resized


def _cond_kwargs(cond) -> dict:
    kwargs = dict(prompt_embeds=cond.prompt_embeds, negative_prompt_embeds=cond.negative_prompt_embeds)
    if cond.pooled_prompt_embeds is not None:
        kwargs.update(pooled_prompt_embeds=cond.pooled_prompt_embeds,
                      negative_pooled_prompt_embeds=cond.negative_pooled_prompt_embeds)
    return kwargs


def _steps_run(pipe, req) -> int:
    """The steps a diffusers pass runs (img2img runs fewer than `req.steps`)."""
    return getattr(pipe, "num_timesteps", None) or req.steps
