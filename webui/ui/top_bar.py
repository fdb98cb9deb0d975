"""The bar above the tabs: controls from `ui_top_bar` (the checkpoint and VAE dropdowns come from the
built-in checkpoints extension), and what changing them does, the same for every extension:

the model those values select (`select_model`) is loaded at once, in the job queue's turn, and its
`model_defaults` go into the tabs: width and height always (SD1 512, SDXL 1024), steps / CFG / sampler
when the new or the previous model has its own (Turbo, Lightning)."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from webui.generation.request import GenerationRequest
from webui.ui import form
from webui.ui.context import UIContext
from webui.ui.contributions import build_guarded, collect
from webui.ui.generate_tab import DEFAULTS, GenerationTab
from webui.ui.runner import message_html

log = logging.getLogger(__name__)
SAMPLING_KEYS = ("steps", "cfg_scale", "sampler", "schedule_type")
BASE_SAMPLING = {"steps": DEFAULTS.steps, "cfg_scale": DEFAULTS.cfg_scale, "sampler": DEFAULTS.sampler,
                 "schedule_type": DEFAULTS.schedule_type}


def build_top_bar(ctx: UIContext) -> tuple[dict[str, Any], Any, list[str]]:
    """({form key: component}, status component, failures) inside the caller's row."""
    fields: dict[str, Any] = {}
    failures: list[str] = []
    for section in collect(ctx.plugins, "ui_top_bar", failures, engine=ctx.engine):
        built, _ = build_guarded("top bar section", section.name, section.build, failures)
        fields.update({form.ext_key(section.name, k): c for k, c in (built or {}).items()})
    status = gr.HTML("", elem_id="easel_model_status")
    return fields, status, failures


def wire_top_bar(ctx: UIContext, fields: dict[str, Any], status, tabs: list[GenerationTab]) -> None:
    if not fields:
        return
    keys = {c: k for k, c in fields.items()}
    previous = gr.State({})
    targets = [c for t in tabs for k in ("width", "height", *SAMPLING_KEYS) if (c := t.fields.get(k)) is not None]

    def switch(values: dict):
        old = values.pop(previous, {}) or {}
        req = GenerationRequest()
        for component, value in values.items():
            extension, name = form.split_ext_key(keys[component])
            req.extensions.setdefault(extension, {})[name] = value
        try:
            model = ctx.engine.run_exclusive(
                lambda: ctx.plugins.first("select_model", request=req, manager=ctx.manager) or ctx.manager.load(None))
            new = ctx.plugins.model_defaults(model)
        except Exception as e:
            log.error("top bar: %s", e)
            return {status: message_html(form.refusal(e))}
        out: dict[Any, Any] = {status: message_html(f"{model.entry.title} · {model.family.name}", kind="done"),
                               previous: new}
        sampling = any(k in new or k in old for k in SAMPLING_KEYS)
        for tab in tabs:
            wanted = {k: new[k] for k in ("width", "height") if k in new}
            if sampling:
                wanted.update({k: new.get(k, BASE_SAMPLING[k]) for k in SAMPLING_KEYS})
            out.update({tab.fields[k]: v for k, v in wanted.items() if k in tab.fields})
        return out

    for component in fields.values():
        if hasattr(component, "change"):
            component.change(switch, inputs={*fields.values(), previous}, outputs=[status, previous, *targets],
                             concurrency_id="easel-model", show_progress="full", show_progress_on=[status],
                             api_visibility="private")
