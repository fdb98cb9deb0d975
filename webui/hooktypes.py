"""The small typed objects that hooks receive or register. Part of the public extension API: fields
are only ever added (with defaults), never renamed or removed, within a major version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class ExtraNetworkType:
    """A `<name:...>` prompt tag an extension handles (`register_extra_networks`).

    The engine cuts every tag from the prompt and puts the calls, grouped by name, in
    `request.extra_networks[name]`; tags whose name nobody registered are reported to the user."""

    name: str  # the tag name, e.g. "lora" for <lora:file:0.8>
    title: str = ""  # shown in the extra-networks browser, e.g. "LoRA"
    list_items: Callable[[], list[dict[str, Any]]] | None = None  # static cards; `items` when they need folders
    items: Callable[[Any], list[dict[str, Any]]] | None = None  # items(manager): cards for the browser and API
    refresh: Callable[[Any], None] | None = None  # refresh(manager): rescan the folders now


@dataclass(frozen=True)
class Setting:
    """A typed option (`register_settings`): shown in Settings, accepted in `override_settings`."""

    key: str  # e.g. "lora_fuse"; A1111 keys keep their names ("CLIP_stop_at_last_layers")
    default: Any
    label: str
    section: str = "Extensions"
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    help: str = ""


@dataclass(frozen=True)
class UISection:
    """A block of controls inside the txt2img / img2img / inpaint tab (`ui_section`).

    `build()` runs inside the tab's Gradio context and returns {field: component}; on Generate the
    values land in `request.extensions[name][field]`."""

    name: str
    title: str
    build: Callable[[], dict[str, Any]]
    open: bool = False


@dataclass(frozen=True)
class UITab:
    """A whole top-level tab (`ui_tabs`); `build()` runs inside the tab's Gradio context."""

    name: str
    title: str
    build: Callable[[], None]


@dataclass(frozen=True)
class Route:
    """An extra HTTP route on the API app (`register_routes`); `endpoint` is a FastAPI endpoint."""

    path: str  # e.g. "/hello/v1/greet"; must not start with /sdapi/ or /easel/
    endpoint: Callable[..., Any]
    methods: tuple[str, ...] = ("GET",)


@dataclass(frozen=True)
class APIScript:
    """An A1111 "always-on script" API clients can drive (`register_api_scripts`): the request's
    `alwayson_scripts: {"<title>": {"args": [...]}}` calls `apply(args, request)`, which usually fills
    `request.extensions[<your name>]`. Raise ValueError for bad args: the client gets a 422 with it."""

    title: str  # matched case-insensitively, as A1111 does ("ControlNet", "Refiner")
    apply: Callable[[list[Any], Any], None]  # (args, GenerationRequest) -> None
    modes: tuple[str, ...] = ("txt2img", "img2img")  # the /sdapi/v1/scripts lists it under these


@dataclass
class StepState:
    """What `step_end` sees after each denoising step. Replace `latents` to change the next step."""

    job_id: str
    step: int  # 1-based, within the current batch
    steps: int
    batch: int
    timestep: Any
    latents: Any  # torch.Tensor
    pipeline: Any
    request: Any  # GenerationRequest


@dataclass
class ImageSaveParams:
    """An image about to be saved (`before_image_saved`): change any field, or set `skip`."""

    image: Image.Image
    infotext: str
    folder: Path
    seed: int
    format: str
    request: Any  # GenerationRequest
    skip: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
