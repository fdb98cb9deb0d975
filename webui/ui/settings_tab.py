"""Settings: every `Setting` (Easel's and the extensions'), grouped by section, saved to `config.json`
atomically with "Apply settings" and applied at once (the next job sees them; no restart)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.config import SettingsError
from webui.hooktypes import Setting
from webui.ui.context import UIContext
from webui.ui.named_params import named_handler
from webui.ui.runner import message_html


def setting_component(setting: Setting, value: Any):
    common = {"label": setting.label, "info": setting.help or None, "elem_id": f"setting_{setting.key}", "value": value}
    if isinstance(setting.default, bool):
        return gr.Checkbox(**common)
    if setting.choices is not None:
        return gr.Dropdown(list(setting.choices), **common)
    if isinstance(setting.default, (int, float)):
        if setting.minimum is not None and setting.maximum is not None:
            step = setting.step or (1 if isinstance(setting.default, int) else 0.01)
            return gr.Slider(setting.minimum, setting.maximum, step=step, **common)
        return gr.Number(precision=0 if isinstance(setting.default, int) else None, **common)
    return gr.Textbox(**common)


def build_settings_tab(ctx: UIContext) -> None:
    config = ctx.config
    components: dict[str, Any] = {}
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
    result = gr.HTML("", elem_id="settings_result")
    if config.load_error:
        gr.HTML(message_html(config.load_error))
    for section, settings in config.sections().items():
        with gr.Accordion(section, open=True, elem_id=f"settings_section_{section.lower().replace(' ', '_')}"):
            for s in settings:
                components[s.key] = setting_component(s, config[s.key])

    def save(request: gr.Request, values: dict[str, Any]):
        changes = {k: v for k, v in values.items() if v is not None}  # API clients send only what they change
        try:
            changed = config.update(changes)
        except SettingsError as e:
            return message_html(str(e))
        if not changed:
            return message_html("Nothing changed.", kind="done")
        names = ", ".join(config.settings[k].label for k in changed)
        return message_html(f"{len(changed)} setting(s) changed and saved: {names}", kind="done")

    fn, named = named_handler(components, save)
    apply.click(fn, inputs_kwargs=named, outputs=result, queue=False, api_name="apply_settings")
