"""What the generation tabs' buttons do: generate (streamed), interrupt, skip, seeds, swap, token
counts, the selected image's infotext, "Send to", and opening the output folder."""

from __future__ import annotations

import html
import logging
import os
import subprocess
import sys
from typing import Any

import gradio as gr
from PIL import Image

from webui.generation.infotext import read_infotext
from webui.generation.params import request_from_infotext
from webui.generation.prompt_encoding import count_tokens
from webui.ui import form
from webui.ui.context import UIContext
from webui.ui.generate_tab import GenerationTab
from webui.ui.named_params import named_handler
from webui.ui.runner import message_html

log = logging.getLogger(__name__)
GENERATE_QUEUE = "easel-generate"  # one queue for every generate button: one device


def info_html(infotext: str) -> str:
    return f'<p class="infotext">{html.escape(infotext)}</p>' if infotext else ""


def token_html(prompt: str) -> str:
    count, limit = count_tokens(prompt or "")
    return f"<span>{count}/{limit}</span>"


def field_updates(tab: GenerationTab, values: dict[str, Any]) -> dict[Any, Any]:
    """{component: value} for every key in `values` that `tab` has a control for (the rest is skipped)."""
    return {tab.fields[k]: v for k, v in values.items() if k in tab.fields and k not in ("img2img_source",)}


def wire_generation_tab(tab: GenerationTab, ctx: UIContext, top_fields: dict[str, Any]) -> None:
    f, b, o = tab.fields, tab.buttons, tab.outputs
    inputs = {**f, **top_fields}
    outputs = [o["progress"], o["preview"], o["gallery"], o["info"], o["results"]]

    def generate(request: gr.Request, by_key: dict[str, Any]):
        try:
            req = form.request_from_form(tab.name, by_key, ctx.request_defaults())
        except (form.FormError, ValueError) as e:
            yield {o["progress"]: message_html(form.refusal(e))}
            return
        # Every output gets a plain value in every update. An output left out of the dict, or given as a
        # component or gr.update(), is a property update, for which Gradio rebuilds the component and its JSON
        # schema for the session: 5-10 ms each on this CPU, three per update, taken from the running job. So
        # the gallery and infotext are emptied while a job runs (A1111 shows the live preview in their place),
        # the preview is hidden by CSS while empty, and the gallery opens on its first image (preview=True).
        def frame(progress: str, preview=None, images=(), info: str = "") -> dict:
            return {o["progress"]: progress, o["preview"]: preview, o["gallery"]: [str(p) for p in images],
                    o["info"]: info}

        for update in ctx.runner.stream(req, request.session_hash):
            if not update.done:
                yield frame(update.progress, update.preview)
                continue
            if update.images is None:  # the job failed: the message says why
                yield frame(update.progress)
                continue
            out = frame(update.progress, None, update.images, info_html(update.infotexts[0] if update.infotexts else ""))
            out[o["results"]] = {"infotexts": update.infotexts, "seeds": update.seeds, "subseeds": update.subseeds,
                                 "images": [str(p) for p in update.images], "selected": 0}
            yield out

    fn, named = named_handler(inputs, generate)
    b["generate"].click(fn, inputs_kwargs=named, outputs=outputs, api_name=tab.name,
                        concurrency_id=GENERATE_QUEUE, concurrency_limit=1, show_progress="minimal",
                        show_progress_on=[o["progress"]])
    _wire_control_buttons(tab, ctx)
    b["random_seed"].click(lambda: -1, outputs=f["seed"], queue=False, api_visibility="private")
    b["random_subseed"].click(lambda: -1, outputs=f["subseed"], queue=False, api_visibility="private")
    b["reuse_seed"].click(lambda r: _selected(r, "seeds", -1), inputs=o["results"], outputs=f["seed"], queue=False,
                          api_visibility="private")
    b["reuse_subseed"].click(lambda r: _selected(r, "subseeds", -1), inputs=o["results"], outputs=f["subseed"],
                             queue=False, api_visibility="private")
    b["swap"].click(lambda w, h: (h, w), inputs=[f["width"], f["height"]], outputs=[f["width"], f["height"]],
                    queue=False, api_visibility="private")
    for key, counter in tab.counters.items():
        f[key].change(token_html, inputs=f[key], outputs=counter, queue=False, show_progress="hidden",
                      trigger_mode="always_last", api_visibility="private")

    def select(results: dict, evt: gr.SelectData):
        results = {**results, "selected": evt.index}
        return info_html(_selected(results, "infotexts", "")), results

    o["gallery"].select(select, inputs=o["results"], outputs=[o["info"], o["results"]], queue=False,
                        api_visibility="private")
    if ctx.local:
        b["open_folder"].click(lambda: open_folder(ctx.outputs_dir(tab.name)), queue=False, api_visibility="private")
    else:
        b["open_folder"].visible = False  # a remote browser cannot see this machine's folders


def _wire_control_buttons(tab: GenerationTab, ctx: UIContext) -> None:
    def interrupt(request: gr.Request) -> None:
        ctx.runner.interrupt(request.session_hash)

    def skip(request: gr.Request) -> None:
        ctx.runner.skip(request.session_hash)

    tab.buttons["interrupt"].click(interrupt, queue=False, api_name=f"{tab.name}_interrupt")
    tab.buttons["skip"].click(skip, queue=False, api_name=f"{tab.name}_skip")


def _selected(results: dict, key: str, default: Any) -> Any:
    items = results.get(key) or []
    index = results.get("selected") or 0
    return items[index] if 0 <= index < len(items) else default


def wire_send_to(source: GenerationTab, target: GenerationTab, ctx: UIContext, tabs, *, inpaint: bool) -> None:
    """"Send to img2img/inpaint": the selected image becomes the input, its parameters fill the fields."""
    button = source.buttons["send_to_inpaint" if inpaint else "send_to_img2img"]
    sub = form.SOURCES[1] if inpaint else form.SOURCES[0]
    image_key = "inpaint_sketch" if inpaint else "init_image"
    outputs = [tabs, target.outputs["source_tabs"], target.fields["img2img_source"], target.outputs["inpaint_controls"],
               *{c for k, c in target.fields.items() if k != "img2img_source"}]

    def send(results: dict):
        path = _selected(results, "images", None)
        if path is None:
            return {}
        image = Image.open(path)
        image.load()
        values = params_for(read_infotext(image) or "", ctx, keep_mode=True)
        values[image_key] = {"background": image, "layers": [], "composite": image} if inpaint else image
        updates = field_updates(target, values)
        updates.update({tabs: gr.Tabs(selected="img2img"), target.fields["img2img_source"]: sub,
                        target.outputs["source_tabs"]: gr.Tabs(selected="inpaint" if inpaint else "img2img"),
                        target.outputs["inpaint_controls"]: gr.Group(visible=inpaint)})
        return updates

    button.click(send, inputs=source.outputs["results"], outputs=outputs, queue=False, api_visibility="private")


def params_for(infotext: str, ctx: UIContext, *, keep_mode: bool = False) -> dict[str, Any]:
    """Form values from an infotext (every extension reads its keys through `infotext_pasted`)."""
    if not infotext:
        return {}
    pasted = request_from_infotext(infotext, ctx.plugins, ctx.engine.manager)
    for notice in pasted.notices:  # e.g. a LoRA the image used that is not installed here
        gr.Warning(notice)
    values = form.form_from_request(pasted.request)
    if keep_mode:
        values.pop("denoising_strength", None)
    return values


def wire_source_tabs(tab: GenerationTab) -> None:
    """img2img's sub-tabs set the job's mode; the inpaint options show only for the inpaint ones."""
    for label, sub in tab.source_tabs.items():
        sub.select(lambda label=label: (label, gr.Group(visible=label != form.SOURCES[0])),
                   outputs=[tab.fields["img2img_source"], tab.outputs["inpaint_controls"]], queue=False,
                   api_visibility="private")


def open_folder(path) -> None:
    """Open the output folder in the desktop's file manager (only offered when served on localhost)."""
    os.makedirs(path, exist_ok=True)
    if sys.platform == "win32":
        os.startfile(path)  # noqa: S606
    else:
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        try:
            subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as e:
            gr.Warning(f"Could not open {path}: {e}")
