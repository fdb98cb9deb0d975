"""easel-hello: the template for a third-party Easel extension (see README.md).

Every hook below is a plain function marked `@hookimpl`, named after a hook in `webui/hookspecs.py`,
taking only the arguments it uses (Easel passes just those, so new hook arguments never break it).
Only `webui`, `webui.hooktypes` and `webui.hookspecs` are public API; import nothing else from Easel."""

from __future__ import annotations

from typing import Any

from webui import hookimpl
from webui.hooktypes import Route, Setting, UISection

NAME = "hello"  # the entry-point name: the key of request.extensions and of the UI section
INFOTEXT_KEY = "Hello"  # written into the infotext's settings line as `Hello: <greeting>`
IN_INFOTEXT = Setting("hello_in_infotext", True, "Write the Hello greeting into the infotext", section="Hello")


def _greeting(request) -> str | None:
    """This job's greeting: the UI section's field arrives as request.extensions["hello"]["greeting"]."""
    return (request.extensions.get(NAME) or {}).get("greeting") or None


def _build() -> dict[str, Any]:
    """The section's controls. Gradio is imported here, not at the top, so that loading the extension
    (the CLI, the API, tests) does not pay for importing Gradio."""
    import gradio as gr

    return {"greeting": gr.Textbox(label="Greeting", placeholder="saved in the image's infotext as Hello: ...")}


def greet() -> dict[str, str]:
    """GET /hello/v1/greet: a FastAPI endpoint (the return annotation becomes the response schema)."""
    return {"greeting": "hello from easel-hello"}


@hookimpl
def ui_section(tab, register):
    register(UISection(NAME, "Hello", _build, open=tab == "txt2img"))


@hookimpl
def register_settings(register):
    register(IN_INFOTEXT)


@hookimpl
def register_routes(register):
    register(Route("/hello/v1/greet", greet, ("GET",)))  # /sdapi/ and /easel/ are Easel's; they are refused


@hookimpl
def infotext_params(request):
    greeting = _greeting(request)
    if greeting is None or not request.override_settings.get(IN_INFOTEXT.key, IN_INFOTEXT.default):
        return None
    return {INFOTEXT_KEY: greeting}


@hookimpl
def infotext_pasted(params, request):
    if INFOTEXT_KEY in params:  # pop it: keys nobody takes are reported as unknown
        request.extensions.setdefault(NAME, {})["greeting"] = params.pop(INFOTEXT_KEY)
