"""Named, optional parameters for the UI's API endpoints (`/txt2img`, `/apply_settings`), so
gradio_client users call `predict(prompt=..., steps=20, api_name="/txt2img")`, not 30 positional values."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import gradio as gr


def param_name(key: str) -> str:
    """A Python name for a form or settings key: `inpaint.mask_blur` -> `inpaint__mask_blur`,
    `ext/checkpoints/vae` -> `ext__checkpoints__vae`."""
    return re.sub(r"\W", "_", key.replace(".", "__").replace("/", "__"))


def named_handler(components: dict[str, Any], handle: Callable[..., Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """(fn, inputs_kwargs) for an event: `fn(request, name=None, ...)` calls `handle(request, {key: value})`
    with the values keyed by the original keys; every parameter is optional for API clients."""
    names = {param_name(k): k for k in components}
    order = list(names)

    def values(args, kwargs) -> dict[str, Any]:
        return {names[n]: v for n, v in [*zip(order, args), *kwargs.items()]}

    if inspect.isgeneratorfunction(handle):  # Gradio streams only from generator functions
        def fn(request: gr.Request, *args, **kwargs):
            yield from handle(request, values(args, kwargs))
    else:
        def fn(request: gr.Request, *args, **kwargs):
            return handle(request, values(args, kwargs))

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    fn.__signature__ = inspect.Signature([inspect.Parameter("request", kind, annotation=gr.Request),
                                          *(inspect.Parameter(n, kind, default=None) for n in order)])
    return fn, {n: components[k] for n, k in names.items()}
