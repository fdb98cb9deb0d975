"""`GenerationRequest` <-> A1111 infotext parameters, with A1111's key names and order
(`processing.create_infotext`), so A1111, Civitai and prompt readers understand Easel's images and
Easel restores theirs. The text layout itself lives in `infotext.py`."""

from __future__ import annotations

from dataclasses import dataclass, field

from webui import __version__
from webui.generation.infotext import format_infotext, parse_infotext
from webui.generation.request import GenerationRequest, InpaintOptions, MaskedContent, Mode, ResizeMode

# Pre-1.9 A1111 wrote the schedule into the sampler name ("DPM++ 2M Karras").
_SCHEDULE_SUFFIXES = {" Karras": "Karras", " Exponential": "Exponential", " SGM Uniform": "SGM Uniform"}


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def infotext_params(req: GenerationRequest, seed: int, subseed: int) -> dict[str, object]:
    """The settings line of one image, as an ordered dict (None values are left out when written).
    Model and VAE keys are placeholders: the checkpoints extension fills them through `infotext_params`."""
    variation = req.subseed_strength > 0
    resized = req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0
    params: dict[str, object] = {
        "Steps": req.steps,
        "Sampler": req.sampler,
        "Schedule type": None if req.schedule_type.lower() == "automatic" else req.schedule_type,
        "CFG scale": _number(req.cfg_scale),
        "Seed": seed,
        "Size": f"{req.width}x{req.height}",
        "Model hash": None,
        "Model": None,
        "VAE hash": None,
        "VAE": None,
        "Variation seed": subseed if variation else None,
        "Variation seed strength": _number(req.subseed_strength) if variation else None,
        "Seed resize from": f"{req.seed_resize_from_w}x{req.seed_resize_from_h}" if resized else None,
        "Denoising strength": _number(req.denoising_strength) if req.mode is not Mode.TXT2IMG else None,
        "Clip skip": req.clip_skip if req.clip_skip > 1 else None,
    }
    if req.mode is not Mode.TXT2IMG and req.resize_mode != 0:
        params["Resize mode"] = req.resize_mode.label
    if req.mode is Mode.INPAINT:
        opts = req.inpaint
        params["Mask blur"] = opts.mask_blur
        params["Masked content"] = opts.masked_content.label
        if opts.only_masked:
            params["Inpaint area"] = "Only masked"
            params["Masked area padding"] = opts.only_masked_padding
        if opts.invert_mask:
            params["Mask mode"] = "Inpaint not masked"
    s = req.sdxl
    for key, value in (("Original size", s.original_size), ("Target size", s.target_size)):
        if value is not None:
            params[key] = f"{value[1]}x{value[0]}"
    if s.crops_coords_top_left != (0, 0):
        params["Crop top-left"] = f"{s.crops_coords_top_left[1]}x{s.crops_coords_top_left[0]}"
    params["Version"] = f"Easel {__version__}"
    return params


def infotext_for(req: GenerationRequest, seed: int, subseed: int, extra: dict | None = None) -> str:
    """The full infotext of one image. `extra` (from extensions) fills A1111 keys in their A1111 position
    (`Model`, `VAE`, ...) and appends the others before `Version`."""
    params = infotext_params(req, seed, subseed)
    version = params.pop("Version")
    params.update(extra or {})
    params["Version"] = version
    return format_infotext(req.prompt, req.negative_prompt, params)


@dataclass
class PastedParameters:
    """What an infotext restores: a request, plus the keys Easel did not map (extensions read them)."""

    request: GenerationRequest
    unknown: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # what extensions want the user to read (a missing LoRA)


def _take_pair(p: dict[str, str], key: str) -> tuple[int, int] | None:
    """A `WxH` value, whether the text layer split it into `key-1`/`key-2` or not."""
    if f"{key}-1" in p:
        p.pop(key, None)
        return int(p.pop(f"{key}-1")), int(p.pop(f"{key}-2"))
    if key in p:
        w, h = p.pop(key).lower().split("x")
        return int(w), int(h)
    return None


def request_from_infotext(text: str, plugins=None, manager=None) -> PastedParameters:
    """The request an infotext describes. With `plugins`, each extension's `infotext_pasted` takes its
    keys (the checkpoints extension: Model, VAE, Refiner); what nobody took stays in `unknown`.
    `manager` (optional) lets extensions check what is installed and add `notices`."""
    prompt, negative, raw = parse_infotext(text)
    p = dict(raw)
    req = GenerationRequest(prompt=prompt, negative_prompt=negative)
    take = p.pop
    if "Steps" in p:
        req.steps = int(take("Steps"))
    if "Sampler" in p:
        req.sampler = take("Sampler")
        for suffix, schedule in _SCHEDULE_SUFFIXES.items():
            if req.sampler.endswith(suffix):
                req.sampler, req.schedule_type = req.sampler[: -len(suffix)], schedule
    if "Schedule type" in p:
        req.schedule_type = take("Schedule type")
    if "CFG scale" in p:
        req.cfg_scale = float(take("CFG scale"))
    if "Seed" in p:
        req.seed = int(take("Seed"))
    size = _take_pair(p, "Size")
    if size:
        req.width, req.height = size
    if "Variation seed" in p:
        req.subseed = int(take("Variation seed"))
        req.subseed_strength = float(take("Variation seed strength", 0))
    resize_from = _take_pair(p, "Seed resize from")
    if resize_from:
        req.seed_resize_from_w, req.seed_resize_from_h = resize_from
    if "Clip skip" in p:
        req.clip_skip = int(take("Clip skip"))
    if "Denoising strength" in p and "Hires upscale" not in p:
        req.mode = Mode.IMG2IMG
        req.denoising_strength = float(take("Denoising strength"))
    if "Resize mode" in p:
        labels = ("Just resize", "Crop and resize", "Resize and fill")
        value = take("Resize mode")
        req.resize_mode = ResizeMode(labels.index(value)) if value in labels else ResizeMode.JUST_RESIZE
    if "Mask blur" in p:
        req.mode = Mode.INPAINT
        req.inpaint = _inpaint_options(p)
    for key, attr in (("Original size", "original_size"), ("Target size", "target_size"), ("Crop top-left", "crops_coords_top_left")):
        pair = _take_pair(p, key)
        if pair:
            setattr(req.sdxl, attr, (pair[1], pair[0]))
    p.pop("Version", None)
    notices: list[str] = []
    if plugins is not None:
        plugins.call_each("infotext_pasted", params=p, request=req, manager=manager, notices=notices)
    return PastedParameters(req, p, notices)


def _inpaint_options(p: dict[str, str]) -> InpaintOptions:
    opts = InpaintOptions(mask_blur=int(p.pop("Mask blur")))
    labels = [m.label for m in MaskedContent]
    content = p.pop("Masked content", "original")
    if content in labels:
        opts.masked_content = MaskedContent(labels.index(content))
    if p.pop("Inpaint area", "Whole picture") == "Only masked":
        opts.only_masked = True
        opts.only_masked_padding = int(p.pop("Masked area padding", 32))
    opts.invert_mask = p.pop("Mask mode", "") == "Inpaint not masked"
    return opts
