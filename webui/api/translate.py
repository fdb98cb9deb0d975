"""A1111 API bodies to `GenerationRequest`, and a `GenerationResult` back to A1111's response.

What Easel cannot do yet is refused with a 422 naming the field (hires fix, face restoration, tiling,
selectable scripts, an unknown always-on script); what A1111 itself ignores in most cases (eta, the
s_* sampler knobs, image_cfg_scale) is accepted and listed in `info["easel_ignored"]`."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui import __version__
from webui.api.images import decode_image
from webui.api.schemas import Img2ImgRequest, Txt2ImgRequest
from webui.generation.infotext import parse_infotext
from webui.generation.request import GenerationRequest, InpaintOptions, MaskedContent, Mode, ResizeMode
from webui.generation.results import GenerationResult
from webui.generation.samplers import find_schedule_type, split_sampler_name
from webui.models.manager import LoadedModel

IGNORED_WHEN_SET = ("eta", "s_min_uncond", "s_churn", "s_tmax", "s_tmin", "s_noise", "image_cfg_scale", "comments")
CORE_INFOTEXT_KEYS = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
                      "VAE hash", "VAE", "Variation seed", "Variation seed strength", "Seed resize from",
                      "Denoising strength", "Clip skip", "Version", "Resize mode", "Mask blur", "Masked content",
                      "Inpaint area", "Masked area padding", "Mask mode"}


class FieldError(ValueError):
    """A request field the API refuses (422); `field` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class Translated:
    request: GenerationRequest
    ignored: list[str] = field(default_factory=list)  # fields accepted but not used (reported in info)


def to_request(body: Txt2ImgRequest, mode: Mode, plugins, defaults: dict[str, Any]) -> Translated:
    """`defaults`: what applies to fields the client did not send (saved clip skip, the model's
    steps/CFG/sampler for Turbo and Lightning); size left out is the model family's native size."""
    sent = body.model_fields_set
    _refuse_unsupported(body)
    req = GenerationRequest(mode=mode, prompt=body.prompt, negative_prompt=body.negative_prompt)
    req.prompt, req.negative_prompt = _apply_styles(body.styles, req.prompt, req.negative_prompt, defaults)
    for name in ("seed", "subseed", "subseed_strength", "batch_size", "steps", "cfg_scale"):
        setattr(req, name, getattr(body, name))
    req.batch_count = body.n_iter
    req.seed_resize_from_w, req.seed_resize_from_h = max(body.seed_resize_from_w, 0), max(body.seed_resize_from_h, 0)
    req.width = body.width if "width" in sent else None
    req.height = body.height if "height" in sent else None
    req.sampler = (body.sampler_name or (body.sampler_index if "sampler_index" in sent else None)
                   or defaults.get("sampler") or "Euler")
    _, legacy_schedule = _sampler(req.sampler)  # "DPM++ 2M Karras": the name carries its schedule
    if body.scheduler:
        try:
            find_schedule_type(body.scheduler)
        except ValueError as e:
            raise FieldError("scheduler", str(e)) from None
    req.schedule_type = body.scheduler or (legacy_schedule.label if legacy_schedule else None) \
        or defaults.get("schedule_type") or "Automatic"
    for name in ("steps", "cfg_scale"):
        if name not in sent and name in defaults:
            setattr(req, name, defaults[name])
    req.clip_skip = int(defaults.get("clip_skip", 1))
    req.override_settings = dict(body.override_settings or {})
    req.save = bool(body.save_images) and not body.do_not_save_samples
    if body.refiner_checkpoint and body.refiner_checkpoint.lower() not in ("none", ""):
        opts = req.extensions.setdefault("checkpoints", {})
        opts["refiner"] = body.refiner_checkpoint
        if body.refiner_switch_at is not None:
            opts["switch_at"] = body.refiner_switch_at
    if isinstance(body, Img2ImgRequest):
        _img2img_fields(body, req, sent)
    _always_on_scripts(body.alwayson_scripts, req, plugins)
    ignored = [name for name in IGNORED_WHEN_SET if getattr(body, name, None) not in (None, {}, 0, 1.0)]
    if body.styles and not defaults.get("styles"):
        ignored.append("styles")
    return Translated(req, ignored)


def _sampler(name: str):
    try:
        return split_sampler_name(name)
    except ValueError as e:
        raise FieldError("sampler_name", str(e)) from None


def _refuse_unsupported(body: Txt2ImgRequest) -> None:
    unsupported = {
        "enable_hr": (body.enable_hr, "hires fix is not supported yet; generate, then send the image to img2img"),
        "restore_faces": (body.restore_faces, "face restoration is not supported yet"),
        "tiling": (body.tiling, "tiling is not supported yet"),
        "script_name": (body.script_name, f"no script named {body.script_name!r}; this server has none "
                                          "(always-on scripts go in alwayson_scripts)"),
    }
    for name, (value, why) in unsupported.items():
        if value:
            raise FieldError(name, why)
    if isinstance(body, Img2ImgRequest):
        noise = body.initial_noise_multiplier
        if noise is not None and noise != 1.0:
            raise FieldError("initial_noise_multiplier", "only 1.0 is supported yet")
        if body.latent_mask:
            raise FieldError("latent_mask", "a separate latent mask is not supported yet")


def _img2img_fields(body: Img2ImgRequest, req: GenerationRequest, sent: set[str]) -> None:
    if not body.init_images:
        raise FieldError("init_images", "img2img needs at least one image")
    req.init_image = decode_image(body.init_images[0], "init_images[0]")
    try:
        req.resize_mode = ResizeMode(body.resize_mode)
    except ValueError:
        raise FieldError("resize_mode", f"{body.resize_mode!r} is not 0 (just resize), 1 (crop and resize) or "
                                        "2 (resize and fill); 3 (latent upscale) is not supported") from None
    req.denoising_strength = 0.75 if body.denoising_strength is None else body.denoising_strength
    if body.mask:
        req.mode = Mode.INPAINT
        req.mask = decode_image(body.mask, "mask")
        try:
            fill = MaskedContent(body.inpainting_fill)
        except ValueError:
            raise FieldError("inpainting_fill", "0 fill, 1 original, 2 latent noise or 3 latent nothing") from None
        blur = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
        req.inpaint = InpaintOptions(mask_blur=blur, invert_mask=bool(body.inpainting_mask_invert),
                                     masked_content=fill, only_masked=body.inpaint_full_res,
                                     only_masked_padding=body.inpaint_full_res_padding)


def _always_on_scripts(scripts: dict[str, Any], req: GenerationRequest, plugins) -> None:
    if not scripts:
        return
    known = plugins.api_scripts()
    for title, value in scripts.items():
        script = known.get(title.lower())
        if script is None:
            raise FieldError("alwayson_scripts", f"always on script {title!r} not found; this server has: "
                                                 f"{', '.join(s.title for s in known.values()) or 'none'}")
        args = value.get("args", []) if isinstance(value, dict) else value
        if not isinstance(args, list):
            raise FieldError("alwayson_scripts", f"{title}: args must be a list")
        try:
            script.apply(args, req)
        except (ValueError, TypeError, IndexError) as e:
            raise FieldError("alwayson_scripts", f"{title}: {e}") from None


def _apply_styles(names, prompt: str, negative: str, defaults: dict[str, Any]) -> tuple[str, str]:
    """A1111's styles: a style's text replaces `{prompt}` in it, or is appended after a comma."""
    styles = defaults.get("styles") or {}
    for name in names or ():
        style = styles.get(name)
        if style is None:
            continue  # A1111 ignores unknown style names too
        prompt, negative = _merge(style.prompt, prompt), _merge(style.negative_prompt, negative)
    return prompt, negative


def _merge(style: str, text: str) -> str:
    if not style:
        return text
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return f"{text}, {style}" if text.strip() else style


def parameters(body: Txt2ImgRequest) -> dict[str, Any]:
    """A1111's `parameters`: the request as received, images left out unless `include_init_images`."""
    params = body.model_dump()
    if isinstance(body, Img2ImgRequest) and not body.include_init_images:
        params["init_images"] = None
        params["mask"] = None
    return params


def info(result: GenerationResult, body: Txt2ImgRequest, ignored: list[str]) -> dict[str, Any]:
    """A1111's `info` object (`Processed.js()`), plus `easel_job_id`, `easel_notices` and `easel_ignored`."""
    req, model = result.request, result.model
    seeds = result.seeds or [req.seed]
    subseeds = [g.subseed for g in result.images] or [req.subseed]
    infotexts = result.infotexts
    extra = {}
    if infotexts:
        _, _, params = parse_infotext(infotexts[0])
        extra = {k: v for k, v in params.items() if k.removesuffix("-1").removesuffix("-2") not in CORE_INFOTEXT_KEYS}
    n = max(len(result.images), 1)
    return {
        "prompt": req.prompt, "all_prompts": [req.prompt] * n,
        "negative_prompt": req.negative_prompt, "all_negative_prompts": [req.negative_prompt] * n,
        "seed": seeds[0], "all_seeds": seeds, "subseed": subseeds[0], "all_subseeds": subseeds,
        "subseed_strength": req.subseed_strength, "width": req.width, "height": req.height,
        "sampler_name": req.sampler, "scheduler": req.schedule_type, "cfg_scale": req.cfg_scale, "steps": req.steps,
        "batch_size": req.batch_size, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": model.entry.model_name, "sd_model_hash": model.entry.hash10,
        "sd_vae_name": _vae_name(model), "sd_vae_hash": None,
        "seed_resize_from_w": req.seed_resize_from_w or -1, "seed_resize_from_h": req.seed_resize_from_h or -1,
        "denoising_strength": req.denoising_strength if req.mode is not Mode.TXT2IMG else None,
        "extra_generation_params": extra, "index_of_first_image": 0, "infotexts": infotexts,
        "styles": list(body.styles or []), "job_timestamp": datetime.datetime.now().strftime("%Y%m%d%H%M%S"),
        "clip_skip": req.clip_skip, "is_using_inpainting_conditioning": model.family.inpaint,
        "version": f"Easel {__version__}",
        "easel_job_id": result.job_id, "easel_notices": list(result.notices), "easel_ignored": ignored,
        "easel_interrupted": result.interrupted,
    }


def _vae_name(model: LoadedModel) -> str | None:
    return Path(model.vae).name if model.vae else None

