"""The checkpoint and VAE dropdowns with a refresh button, for the UI's top bar (`ui_top_bar`).

Choices are `(label, value)`: the label shows the title (`name [hash]`, the hash once known) and the
family; the value is the file name, which stays valid when the hash gets computed."""

from __future__ import annotations

import gradio as gr

from webui.models.vae import AUTOMATIC, NONE, list_vaes


def checkpoint_choices(manager) -> list[tuple[str, str]]:
    return [(f"{e.title} · {e.detection.family}", e.name) for e in manager.checkpoints() if e.detection.known]


def vae_choices(manager) -> list[str]:
    return [AUTOMATIC, NONE, *(v.name for v in list_vaes(manager.paths.vae_dirs))]


def default_checkpoint(manager) -> str | None:
    try:
        return manager.default().name
    except LookupError:
        return None


def build(engine) -> dict:
    manager = engine.manager
    checkpoint = gr.Dropdown(checkpoint_choices(manager), value=default_checkpoint(manager),
                             label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint",
                             min_width=320, scale=3)
    vae = gr.Dropdown(vae_choices(manager), value=manager.default_vae, label="SD VAE", elem_id="setting_sd_vae",
                      min_width=200, scale=2)
    refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", size="sm", scale=0, min_width=40)

    def rescan():
        return gr.Dropdown(choices=checkpoint_choices(manager)), gr.Dropdown(choices=vae_choices(manager))

    refresh.click(rescan, outputs=[checkpoint, vae], queue=False, api_visibility="private")
    return {"checkpoint": checkpoint, "vae": vae}
