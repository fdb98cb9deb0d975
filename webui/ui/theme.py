"""Easel's Gradio theme: Gradio's default with system fonts, so the page never fetches Google Fonts
(it works offline and tells no third party who is using it). Light or dark follows the browser."""

from __future__ import annotations

import gradio as gr

SANS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif")
MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")


def easel_theme() -> gr.themes.Base:
    return gr.themes.Default(primary_hue="orange", secondary_hue="blue", neutral_hue="slate",
                             font=list(SANS), font_mono=list(MONO))
