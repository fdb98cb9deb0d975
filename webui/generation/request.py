"""`GenerationRequest`: the one typed object the UI, the REST API, the CLI and extensions fill in.

Field names follow A1111's processing objects where they exist (steps, cfg_scale, subseed,
denoising_strength, ...), so the API and infotext layers are thin mappings. `validate` returns a
normalised copy plus the notices a user should see (sizes rounded to a multiple of 8, a mask resized),
and raises `RequestError` naming the field for anything it cannot fix."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum
from typing import Any

from PIL import Image

from webui.models.registry import CheckpointEntry


class RequestError(ValueError):
    """A request the engine refuses; the message names the field and the allowed range."""


class Mode(str, Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


class ResizeMode(IntEnum):
    """A1111's img2img resize modes, with its numbering (the API sends the number)."""

    JUST_RESIZE = 0
    CROP_AND_RESIZE = 1
    RESIZE_AND_FILL = 2

    @property
    def label(self) -> str:
        return ("Just resize", "Crop and resize", "Resize and fill")[self]


class MaskedContent(IntEnum):
    """What the masked area starts from (A1111's `inpainting_fill` numbering)."""

    FILL = 0
    ORIGINAL = 1
    LATENT_NOISE = 2
    LATENT_NOTHING = 3

    @property
    def label(self) -> str:
        return ("fill", "original", "latent noise", "latent nothing")[self]


@dataclass
class InpaintOptions:
    mask_blur: int = 4
    invert_mask: bool = False
    masked_content: MaskedContent = MaskedContent.ORIGINAL
    only_masked: bool = False  # A1111 "Inpaint area: Only masked" (inpaint_full_res)
    only_masked_padding: int = 32


@dataclass
class SDXLConditioning:
    """SDXL micro-conditioning; None means A1111/diffusers' default (the generation size, crop 0,0)."""

    original_size: tuple[int, int] | None = None  # (height, width)
    crops_coords_top_left: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None
    negative_original_size: tuple[int, int] | None = None
    negative_crops_coords_top_left: tuple[int, int] = (0, 0)
    negative_target_size: tuple[int, int] | None = None
    aesthetic_score: float = 6.0  # refiner only
    negative_aesthetic_score: float = 2.5


@dataclass(frozen=True)
class GenerationLimits:
    """Upper bounds a request must stay under (settings may raise them). A1111's UI sliders stop at
    2048 px, 150 steps and batch size 8; the API here allows more but not an out-of-memory crash."""

    min_size: int = 64
    max_size: int = 4096
    max_pixels: int = 4096 * 4096
    max_steps: int = 500
    max_batch_size: int = 64
    max_batch_count: int = 1000
    max_images: int = 1000  # batch_size * batch_count


@dataclass
class GenerationRequest:
    mode: Mode = Mode.TXT2IMG
    prompt: str = ""
    negative_prompt: str = ""
    checkpoint: str | CheckpointEntry | None = None  # title, name or hash (or a resolved entry); None = default
    sampler: str = "DPM++ 2M"
    schedule_type: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int | None = None  # None = the model family's native size (512, 768, 1024)
    height: int | None = None
    seed: int = -1
    subseed: int = -1  # variation seed
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0  # A1111 "Resize seed from width/height"; 0 = off
    seed_resize_from_h: int = 0
    batch_count: int = 1  # A1111's n_iter
    batch_size: int = 1
    clip_skip: int = 1
    denoising_strength: float = 0.75
    init_image: Image.Image | None = None
    mask: Image.Image | None = None  # white = repaint
    resize_mode: ResizeMode = ResizeMode.JUST_RESIZE
    inpaint: InpaintOptions = field(default_factory=InpaintOptions)
    sdxl: SDXLConditioning = field(default_factory=SDXLConditioning)
    extensions: dict[str, Any] = field(default_factory=dict)  # per-extension parameters, by extension name
    extra_networks: dict[str, list[Any]] = field(default_factory=dict)  # <name:args> calls, set by the engine
    override_settings: dict[str, Any] = field(default_factory=dict)
    save: bool | None = None  # save the images; None = the engine's setting (A1111's API saves only when asked)

    @property
    def images_total(self) -> int:
        return self.batch_size * self.batch_count

    def validate(self, limits: GenerationLimits, native_size: int = 512) -> tuple["GenerationRequest", list[str]]:
        """A checked copy of the request and notices for what was adjusted. Raises `RequestError`."""
        notices: list[str] = []
        req = replace(self, mode=_enum(Mode, self.mode, "mode"), resize_mode=_enum(ResizeMode, self.resize_mode, "resize_mode"))
        req.inpaint = replace(req.inpaint, masked_content=_enum(MaskedContent, req.inpaint.masked_content, "masked content"))
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(req, name), str):
                raise RequestError(f"{name} must be text, got {type(getattr(req, name)).__name__}")
        req.width, req.height = (_size(req, name, native_size, limits, notices) for name in ("width", "height"))
        if req.width * req.height > limits.max_pixels:
            raise RequestError(f"size {req.width}x{req.height} is over the limit of {limits.max_pixels} pixels")
        _int_range(req, "steps", 1, limits.max_steps)
        _int_range(req, "batch_size", 1, limits.max_batch_size)
        _int_range(req, "batch_count", 1, limits.max_batch_count)
        _int_range(req, "clip_skip", 1, 12)
        if req.images_total > limits.max_images:
            raise RequestError(f"batch size x batch count = {req.images_total} images; the limit is {limits.max_images}")
        _float_range(req, "cfg_scale", 0.0, 100.0)
        _float_range(req, "denoising_strength", 0.0, 1.0)
        _float_range(req, "subseed_strength", 0.0, 1.0)
        for name in ("seed", "subseed"):
            value = getattr(req, name)
            if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value < 2**32:
                raise RequestError(f"{name} must be -1 (random) or an integer in 0..{2**32 - 1}, got {value!r}")
        for name in ("seed_resize_from_w", "seed_resize_from_h"):
            value = getattr(req, name)
            if not isinstance(value, int) or not (value <= 0 or limits.min_size <= value <= limits.max_size):
                raise RequestError(f"{name} must be 0 (off) or {limits.min_size}..{limits.max_size}, got {value!r}")
        _int_range(req.inpaint, "mask_blur", 0, 256, "mask blur")
        _int_range(req.inpaint, "only_masked_padding", 0, 1024, "only masked padding")
        _check_images(req, notices)
        if not isinstance(req.extensions, dict) or not isinstance(req.override_settings, dict):
            raise RequestError("extensions and override_settings must be dictionaries")
        return req, notices


def _enum(kind, value, what: str):
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        raise RequestError(f"unknown {what} {value!r}; choose one of: {choices}") from None


def _size(req: GenerationRequest, name: str, native: int, limits: GenerationLimits, notices: list[str]) -> int:
    value = getattr(req, name)
    if value is None:
        return native
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{name} must be a number of pixels, got {value!r}")
    if not limits.min_size <= value <= limits.max_size:
        raise RequestError(f"{name} {value} is out of range {limits.min_size}..{limits.max_size}")
    rounded = int(value) // 8 * 8  # A1111 floors to the latent grid (size // 8) the same way
    if rounded != value:
        notices.append(f"{name} {value} rounded down to {rounded} (a multiple of 8)")
    return rounded


def _int_range(obj, name: str, low: int, high: int, label: str | None = None) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{label or name} must be an integer in {low}..{high}, got {value!r}")


def _float_range(obj, name: str, low: float, high: float) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise RequestError(f"{name} must be in {low}..{high}, got {value!r}")
    setattr(obj, name, float(value))


def _check_images(req: GenerationRequest, notices: list[str]) -> None:
    if req.mode is Mode.TXT2IMG:
        return
    if not isinstance(req.init_image, Image.Image):
        got = "nothing" if req.init_image is None else type(req.init_image).__name__
        raise RequestError(f"{req.mode.value} needs an init image (a PIL image), got {got}")
    if req.mode is Mode.INPAINT:
        if not isinstance(req.mask, Image.Image):
            raise RequestError("inpaint needs a mask image (white = repaint)")
        if req.mask.size != req.init_image.size:
            notices.append(f"mask {req.mask.size[0]}x{req.mask.size[1]} resized to the init image's "
                           f"{req.init_image.size[0]}x{req.init_image.size[1]}")
            req.mask = req.mask.resize(req.init_image.size, Image.Resampling.LANCZOS)
