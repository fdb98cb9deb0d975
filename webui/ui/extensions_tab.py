"""Extensions: what is loaded (name, version, source, hooks) and what failed to load, read-only.

Nothing here installs or enables code: installing is `pip install` or a folder in `extensions/`, done
by whoever runs the server, so an exposed UI can never be used to run someone else's code."""

from __future__ import annotations

import html

import gradio as gr

from webui.ui.context import UIContext


def extensions_html(ctx: UIContext, ui_failures: list[str]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(i.name)}</td><td>{html.escape(i.version)}</td><td>{html.escape(i.source)}</td>"
        f"<td>{html.escape(', '.join(i.hooks))}</td></tr>" for i in ctx.plugins.infos())
    table = ("<table class='easel-extensions'><thead><tr><th>Extension</th><th>Version</th><th>Source</th>"
             f"<th>Hooks</th></tr></thead><tbody>{rows}</tbody></table>")
    failures = [f"{f.name} ({f.source}): {f.error}" for f in (*ctx.plugins.failures, *ctx.route_failures)]
    failures += ui_failures
    if failures:
        items = "".join(f"<li>{html.escape(x)}</li>" for x in failures)
        table += f"<h3>Failed to load (disabled)</h3><ul class='easel-extension-failures'>{items}</ul>"
    return table


def build_extensions_tab(ctx: UIContext, ui_failures: list[str]) -> None:
    gr.HTML(extensions_html(ctx, ui_failures), elem_id="extensions_list")
    gr.Markdown("Install extensions with `pip install` (entry point group `easel`) or by putting a folder in "
                "`extensions/`, then restart Easel. `easel extensions` lists the same from the terminal.")
