"""The whole page: top bar, txt2img, img2img (with inpaint), PNG Info, Settings, Extensions, and the
tabs extensions add (`ui_tabs`). Layout lives in the `*_tab.py` modules, behaviour in `events.py`."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from webui.models.families import FAMILIES
from webui.ui.context import UIContext
from webui.ui.contributions import build_guarded, collect
from webui.ui.events import wire_generation_tab, wire_send_to, wire_source_tabs
from webui.ui.extensions_tab import build_extensions_tab
from webui.ui.generate_tab import build_generation_tab
from webui.ui.pnginfo_tab import build_pnginfo_tab
from webui.ui.settings_tab import build_settings_tab
from webui.ui.top_bar import build_top_bar, wire_top_bar

ASSETS = Path(__file__).parent / "assets"


def native_size(ctx: UIContext) -> int:
    """The default checkpoint's native size, from its header (nothing is loaded to know it)."""
    try:
        return FAMILIES[ctx.manager.default().detection.family].default_size
    except (LookupError, OSError):
        return 512


def build_blocks(ctx: UIContext) -> gr.Blocks:
    size = native_size(ctx)
    defaults = {"width": size, "height": size}
    failures: list[str] = []
    with gr.Blocks(title="Easel", analytics_enabled=False, fill_width=True) as blocks:
        with gr.Row(elem_id="quicksettings", equal_height=True):
            top_fields, status, top_failures = build_top_bar(ctx)
        failures += top_failures
        if ctx.plugins.failures:
            names = ", ".join(f.name for f in ctx.plugins.failures)
            gr.HTML(f'<div class="easel-message error" id="extension_failures_banner">Extensions that failed to load '
                    f'and are disabled: {html.escape(names)} (see the Extensions tab)</div>')
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                txt2img = build_generation_tab("txt2img", ctx.plugins, ctx.engine, defaults)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                img2img = build_generation_tab("img2img", ctx.plugins, ctx.engine, defaults)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                build_pnginfo_tab(ctx, tabs, txt2img, img2img)
            failures += txt2img.section_failures + img2img.section_failures
            failures += _extension_tabs(ctx)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                build_settings_tab(ctx)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                build_extensions_tab(ctx, failures)
        for tab in (txt2img, img2img):
            wire_generation_tab(tab, ctx, top_fields)
        wire_source_tabs(img2img)
        for source in (txt2img, img2img):
            wire_send_to(source, img2img, ctx, tabs, inpaint=False)
            wire_send_to(source, img2img, ctx, tabs, inpaint=True)
        wire_top_bar(ctx, top_fields, status, [txt2img, img2img])
    return blocks


def _extension_tabs(ctx: UIContext) -> list[str]:
    failures: list[str] = []
    for t in collect(ctx.plugins, "ui_tabs", failures, engine=ctx.engine):
        with gr.Tab(t.title, id=t.name, elem_id=f"tab_{t.name}"):
            _, error = build_guarded("extension tab", t.name, t.build, failures)
            if error:
                gr.Markdown(f"This tab failed to load: `{error}`")
    return failures


def page_css() -> str:
    return (ASSETS / "easel.css").read_text(encoding="utf-8")


def page_head(theme: str) -> str:
    """Keyboard shortcuts, and the forced theme (`--theme`): Gradio follows the browser otherwise."""
    script = (ASSETS / "shortcuts.js").read_text(encoding="utf-8")
    forced = f"window.EASEL_THEME = {theme!r};" if theme in ("light", "dark") else "window.EASEL_THEME = '';"
    return f"<script>{forced}\n{script}</script>"
