"""Between the generation tabs' controls and `GenerationRequest`, both ways, with no Gradio in sight.

Each control has a key: a request field ("steps"), an inpaint option ("inpaint.mask_blur"), an input
("init_image", "inpaint_sketch", "inpaint_base", "inpaint_mask", "img2img_source"), or an extension
field written `ext/<extension>/<field>` (values land in `request.extensions[extension][field]`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from webui.generation.request import GenerationRequest, InpaintOptions, MaskedContent, Mode, RequestError, ResizeMode

SOURCES = ("img2img", "Inpaint", "Inpaint upload")  # the img2img tab's sub-tabs, as A1111 names them
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_AREAS = ("Whole picture", "Only masked")
MASKED_CONTENT = tuple(m.label for m in MaskedContent)
RESIZE_MODES = tuple(m.label for m in ResizeMode)

PLAIN_FIELDS = ("prompt", "negative_prompt", "sampler", "schedule_type", "steps", "cfg_scale", "width", "height",
                "seed", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
                "batch_count", "batch_size", "denoising_strength")
INT_FIELDS = {"steps", "width", "height", "seed", "subseed", "seed_resize_from_w", "seed_resize_from_h",
              "batch_count", "batch_size"}


def ext_key(extension: str, name: str) -> str:
    return f"ext/{extension}/{name}"


def split_ext_key(key: str) -> tuple[str, str] | None:
    if not key.startswith("ext/"):
        return None
    _, extension, name = key.split("/", 2)
    return extension, name


class FormError(ValueError):
    """The form cannot make a request (no init image, an empty mask); the message says what to do."""


def request_from_form(tab: str, values: dict[str, Any], defaults: dict[str, Any] | None = None) -> GenerationRequest:
    """The request the "txt2img" or "img2img" tab's values describe (img2img covers inpaint: the
    `img2img_source` sub-tab decides). `defaults` are request fields taken from settings (clip skip)."""
    req = GenerationRequest(**(defaults or {}))
    values = {k: v for k, v in values.items() if v is not None}  # None: not given (API clients)
    for key in PLAIN_FIELDS:
        if key in values:
            value = values[key]
            setattr(req, key, int(value) if key in INT_FIELDS else value)
    for key, value in values.items():
        ext = split_ext_key(key)
        if ext:
            req.extensions.setdefault(ext[0], {})[ext[1]] = value
    if tab == "txt2img":
        return req
    if "resize_mode" in values:
        req.resize_mode = ResizeMode(RESIZE_MODES.index(values["resize_mode"]))
    source = values.get("img2img_source") or SOURCES[0]
    if source == SOURCES[0]:
        req.mode = Mode.IMG2IMG
        req.init_image = _rgb(values.get("init_image"), "Drop an image into img2img first")
        return req
    req.mode = Mode.INPAINT
    req.inpaint = _inpaint_options(values)
    if source == SOURCES[1]:
        req.init_image, req.mask = sketch_image_and_mask(values.get("inpaint_sketch"))
    else:
        req.init_image = _rgb(values.get("inpaint_base"), "Inpaint upload needs an image")
        mask = values.get("inpaint_mask")
        if mask is None:
            raise FormError("Inpaint upload needs a mask image (white = repaint)")
        req.mask = _upload_mask(mask)
    return req


def _upload_mask(mask: Image.Image) -> Image.Image:
    """A1111's rule (`create_binary_mask`): a mask with transparency is its alpha (opaque = repaint),
    any other mask its brightness (white = repaint). The upload control hands every image over as RGBA."""
    if mask.mode == "P":
        mask = mask.convert("RGBA")
    if "A" in mask.getbands():
        alpha = mask.getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha.point(lambda x: 255 if x > 128 else 0)
    return mask.convert("L")


def _rgb(image: Image.Image | None, missing: str) -> Image.Image:
    if image is None:
        raise FormError(missing)
    return image.convert("RGB")


def _inpaint_options(values: dict[str, Any]) -> InpaintOptions:
    opts = InpaintOptions()
    if "inpaint.mask_blur" in values:
        opts.mask_blur = int(values["inpaint.mask_blur"])
    if "inpaint.invert_mask" in values:
        opts.invert_mask = values["inpaint.invert_mask"] == MASK_MODES[1]
    if "inpaint.masked_content" in values:
        opts.masked_content = MaskedContent(MASKED_CONTENT.index(values["inpaint.masked_content"]))
    if "inpaint.only_masked" in values:
        opts.only_masked = values["inpaint.only_masked"] == INPAINT_AREAS[1]
    if "inpaint.only_masked_padding" in values:
        opts.only_masked_padding = int(values["inpaint.only_masked_padding"])
    return opts


def sketch_image_and_mask(editor: dict | None) -> tuple[Image.Image, Image.Image]:
    """(image, mask) from a `gr.ImageMask` value: the painted strokes' alpha is the mask (white = repaint)."""
    if not editor or editor.get("background") is None:
        raise FormError("Drop an image into Inpaint and paint over the part to change")
    background = editor["background"]
    painted = np.zeros((background.height, background.width), dtype=bool)
    for layer in editor.get("layers") or []:
        if layer is None:
            continue
        alpha = np.asarray(layer.convert("RGBA").resize(background.size))[..., 3]
        painted |= alpha > 0
    if not painted.any():
        raise FormError("The mask is empty: paint over the part of the image to change")
    return background.convert("RGB"), Image.fromarray(painted.astype(np.uint8) * 255, "L")


def form_from_request(req: GenerationRequest) -> dict[str, Any]:
    """Control values that show `req` (PNG Info's "Send to"): the inverse of `request_from_form` for
    every field an infotext carries, extension fields included."""
    values: dict[str, Any] = {k: getattr(req, k) for k in PLAIN_FIELDS if getattr(req, k) is not None}
    values["resize_mode"] = ResizeMode(req.resize_mode).label
    if req.mode is Mode.INPAINT:
        opts = req.inpaint
        values.update({
            "inpaint.mask_blur": opts.mask_blur,
            "inpaint.invert_mask": MASK_MODES[int(opts.invert_mask)],
            "inpaint.masked_content": MaskedContent(opts.masked_content).label,
            "inpaint.only_masked": INPAINT_AREAS[int(opts.only_masked)],
            "inpaint.only_masked_padding": opts.only_masked_padding,
        })
    for extension, fields in req.extensions.items():
        if isinstance(fields, dict):
            values.update({ext_key(extension, name): value for name, value in fields.items()})
    return values


def refusal(error: Exception) -> str:
    """A one-line message for the user: the request's problem, not a traceback."""
    if isinstance(error, (FormError, RequestError)):
        return str(error)
    return f"{type(error).__name__}: {error}"
