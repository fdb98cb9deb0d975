"""THE public extension API of Easel: every hook, typed and documented (docs/extensions.md has one
section per hook with an example).

Write an implementation with `from webui import hookimpl` and name only the arguments you use:
pluggy passes just those, so a hook gaining an argument never breaks an existing extension. Hooks
are added, never renamed; a hook or argument to be retired first warns for a release (pluggy's
`warn_on_impl`). `API_VERSION` counts breaking changes (none yet)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from diffusers import DiffusionPipeline
    from PIL import Image

    from webui.generation.engine import Engine
    from webui.generation.request import GenerationRequest
    from webui.hooktypes import APIScript, ExtraNetworkType, ImageSaveParams, Route, Setting, StepState, UISection, UITab
    from webui.models.manager import LoadedModel, ModelManager

API_VERSION = 1
PROJECT = "easel"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add hookspecs for other extensions: `pluginmanager.add_hookspecs(my_hookspecs_module)`.

    Called once for each extension as it is registered (historic: late registrations get it too)."""


@hookspec
def register_extra_networks(register: Callable[[ExtraNetworkType], None]) -> None:
    """Declare `<name:...>` prompt tags this extension handles: `register(ExtraNetworkType("lora", "LoRA"))`.

    Called when the plugin manager starts. The engine cuts tags from prompts and puts the calls in
    `request.extra_networks[name]`; a tag nobody registered is reported to the user and ignored."""


@hookspec
def register_settings(register: Callable[[Setting], None]) -> None:
    """Declare typed options: `register(Setting("hello_greeting", "Hello", "Greeting"))`.

    They appear in the Settings tab and are accepted in `request.override_settings`."""


@hookspec
def register_routes(register: Callable[[Route], None]) -> None:
    """Add HTTP routes to the API app: `register(Route("/hello/v1/greet", endpoint, ("GET",)))`.

    Called when the API app is built. Paths under /sdapi/ and /easel/ are reserved for Easel."""


@hookspec
def register_api_scripts(register: Callable[[APIScript], None]) -> None:
    """Accept A1111's `alwayson_scripts` entries: `register(APIScript("Hello", apply))`, where
    `apply(args, request)` maps the script's positional `args` onto the request. A title nobody
    registered is refused with a 422, as A1111 does; `/sdapi/v1/scripts` lists the titles."""


@hookspec
def ui_tabs(register: Callable[[UITab], None], engine: Engine) -> None:
    """Add whole tabs to the web UI: `register(UITab("hello", "Hello", build))`; `build()` makes the
    Gradio components inside the tab. `engine.manager` lists models; `engine.run_exclusive(fn)` runs
    torch work that must not overlap a job on the engine's compute thread."""


@hookspec
def ui_section(tab: str, register: Callable[[UISection], None], engine: Engine) -> None:
    """Add a section to the "txt2img", "img2img" or "inpaint" tab (`tab` says which). In the page,
    inpaint is part of the img2img tab: a section registered for both appears there once.

    `register(UISection(name, title, build))`; `build()` returns {field: gradio component}; on
    Generate the values arrive as `request.extensions[name][field]`."""


@hookspec
def ui_top_bar(register: Callable[[UISection], None], engine: Engine) -> None:
    """Add controls to the bar above the tabs (the built-in checkpoints extension puts the checkpoint
    and VAE dropdowns there): `register(UISection(name, title, build))`.

    `build()` returns {field: gradio component}; every tab's jobs get the values as
    `request.extensions[name][field]`. When one changes, the UI loads the model they select
    (`select_model`) and applies its `model_defaults` to the tabs."""


@hookspec(firstresult=True)
def select_model(request: GenerationRequest, manager: ModelManager) -> LoadedModel | None:
    """Choose and load the model for a job (the built-in `checkpoints` extension does this from
    `request.checkpoint`). First non-None result wins; with none, the manager's default model."""


@hookspec(firstresult=True)
def job_pipeline(pipeline: DiffusionPipeline, request: GenerationRequest, model: LoadedModel) -> DiffusionPipeline | None:
    """Replace the pipeline this job runs, e.g. `StableDiffusionControlNetPipeline.from_pipe(pipeline,
    controlnet=...)`. Called once per job after the engine built `pipeline` (the mode's class, this job's
    scheduler) and before `prepare_pipeline`. First non-None result wins; build it with `from_pipe` so
    the weights stay shared, and keep the scheduler."""


@hookspec
def model_defaults(model: LoadedModel) -> dict[str, Any] | None:
    """Settings the UI and API apply when the user has not set them, for this model: e.g. width/height
    1024 for SDXL, or steps/cfg_scale/sampler for Turbo. Results are merged; where two extensions set
    the same key, the one called first (registered last) wins, so a third party overrides a built-in."""


@hookspec
def model_loaded(model: LoadedModel) -> None:
    """A checkpoint was loaded into memory (not called for cache hits)."""


@hookspec
def model_unloaded(model: LoadedModel) -> None:
    """A checkpoint was evicted from memory; drop anything cached for it (adapters, embeddings)."""


@hookspec
def before_generate(request: GenerationRequest, model: LoadedModel) -> None:
    """Adjust the request in place before it is validated and run (e.g. apply defaults)."""


@hookspec
def prepare_pipeline(pipeline: DiffusionPipeline, request: GenerationRequest, model: LoadedModel,
                     manager: ModelManager, notices: list[str]) -> None:
    """Implement as `@hookimpl(wrapper=True)`: patch the job's pipeline before `yield`, undo after it.

    The `yield` spans the whole denoising run of the job (every batch); code after it runs even when
    the job fails or is interrupted (use try/finally). `pipeline` is this job's own pipeline object,
    built over the shared weights of `model`: undo every change to shared modules (UNet, text encoders).
    Append to `notices` what the user should read with the result (a skipped LoRA)."""


@hookspec
def pipeline_kwargs(pipeline: DiffusionPipeline, request: GenerationRequest) -> dict[str, Any] | None:
    """Extra keyword arguments for the diffusers call of this job (control images, IP-Adapter embeds).

    Runs once per job after `prepare_pipeline` patched the pipeline. Return None to add nothing. Two
    extensions returning the same key fail the job with both names in the message."""


@hookspec
def step_end(state: StepState) -> None:
    """After each denoising step (diffusers' `callback_on_step_end`). Replace `state.latents` to
    change what the next step sees."""


@hookspec
def after_denoising(latents: torch.Tensor, request: GenerationRequest, model: LoadedModel,
                    manager: ModelManager, seeds: list[int], step_callback: Callable) -> torch.Tensor | None:
    """Latents of one batch after the denoising loop, before decoding (`seeds`: one per image); return
    new latents (e.g. an SDXL refiner continuing the base run) or None. Chained: each extension sees
    the previous one's result. Not called for a batch that was interrupted. A second denoising pass
    passes `step_callback` to its diffusers call as `callback_on_step_end` (tensor inputs ["latents"]):
    its steps then count on in the job's progress, run `step_end`, draw previews and stop on Interrupt/Skip."""


@hookspec
def postprocess_image(image: Image.Image, request: GenerationRequest) -> Image.Image | None:
    """Each decoded image, before the infotext is written; return a new image or None to keep it.
    Chained: each extension receives the previous one's result."""


@hookspec
def infotext_params(request: GenerationRequest, model: LoadedModel, manager: ModelManager) -> dict[str, Any] | None:
    """Keys to add to the infotext's settings line (None values are left out); A1111 keys such as
    `Model` land in A1111's position. Read them back in `infotext_pasted`."""


@hookspec
def infotext_pasted(params: dict[str, str], request: GenerationRequest, manager: ModelManager | None,
                    notices: list[str]) -> None:
    """An infotext is being applied (PNG Info "Send to", API): `params` holds the keys Easel's core did
    not use; pop yours and set the request (usually `request.extensions[<your name>]`). `manager` (None
    when the caller has none) tells what is installed; append to `notices` what the user should read."""


@hookspec
def before_image_saved(params: ImageSaveParams) -> None:
    """An image is about to be saved: change `params.image`, `params.infotext`, `params.folder`, or set
    `params.skip = True` to not save it (it is still returned to the user)."""


@hookspec
def image_saved(path: Path, request: GenerationRequest) -> None:
    """An image was written to `path` (complete and renamed into place)."""
