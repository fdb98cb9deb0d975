"""The LoRA section of the txt2img and img2img tabs: a stack of slots (LoRA + weight each) and an
extra-networks browser (cards with previews; a click puts `<lora:name:1>` into the tab's prompt).

The slots are section fields `lora_1`, `weight_1`, ... so a job reads them from
`request.extensions["lora"]` (`stack.from_fields`) like any extension's fields. Previews are embedded as
small data: URIs: the server serves only the outputs folder, never models/Lora. Gradio is imported
inside the builders, so the CLI, the API and the tests load the extension without it."""

from __future__ import annotations

import base64
import html
import io
import os
import re
from functools import lru_cache
from pathlib import Path

from PIL import Image

from extensions.lora.library import LoraEntry, LoraLibrary, library_for

SLOTS = 6
THUMB = 128  # px, the longer side of a card's preview
_NOT_IN_TAG = re.compile(r"[:<>]")  # a tag is cut at ':' and '>' (`<lora:name:weight>`)


def slot_fields(n: int) -> tuple[str, str]:
    return f"lora_{n}", f"weight_{n}"


def elem_prefix(tab: str) -> str:
    """Inpaint lives in the img2img tab, so its section (built once) carries img2img's ids."""
    return "txt2img" if tab == "txt2img" else "img2img"


# ---- what the page shows, without Gradio ----------------------------------------------------------


def choice_label(entry: LoraEntry) -> str:
    """`name · family`: a LoRA of another family stays listed (the job skips it with a notice)."""
    return f"{entry.name} · {entry.family}" + (" · unusable" if entry.error else "")


def slot_choices(library: LoraLibrary) -> list[tuple[str, str]]:
    return [(choice_label(e), e.name) for e in library.entries()]


def _taggable(name: str) -> bool:
    return bool(name) and name.strip() == name and not _NOT_IN_TAG.search(name)


def tag_name(library: LoraLibrary, entry: LoraEntry) -> str:
    """The name a tag can carry and that `library.find` resolves to this very file: the name (unique, so
    it always resolves: no lookup, which matters for thousands of cards), else the alias or file stem,
    else (a name with ':' or '>') its hash."""
    if _taggable(entry.name):
        return entry.name
    for candidate in (entry.alias, entry.path.stem):
        if _taggable(candidate) and library.find(candidate) is entry:
            return candidate
    return library.with_hash(entry)[:12]


def thumbnail(path: Path | str | None) -> str | None:
    """A small JPEG data: URI of a preview image, or None when there is none or it cannot be read."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _thumbnail(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=1024)  # keyed by mtime and size: a replaced preview is read again
def _thumbnail(path: str, mtime_ns: int, size: int) -> str | None:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB * 2, THUMB * 2))  # JPEG: decode at a reduced scale, much faster
            im.thumbnail((THUMB, THUMB))
            rgba = im.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    flat = Image.new("RGB", rgba.size, (128, 128, 128))  # transparent parts on neutral grey
    flat.paste(rgba, mask=rgba.getchannel("A"))
    buf = io.BytesIO()
    flat.save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _tooltip(entry: LoraEntry) -> str:
    lines = [entry.name, f"alias: {entry.alias}", f"format: {entry.format}",
             f"rank: {entry.rank if entry.rank is not None else '?'}", f"family: {entry.family}"]
    if entry.error:
        lines.append(f"cannot be used: {entry.error}")
    return "\n".join(lines)


def card_html(library: LoraLibrary, entry: LoraEntry) -> str:
    """One card. Every file-derived string is escaped: file names and metadata are user data."""
    e = lambda s: html.escape(str(s), quote=True)
    src = thumbnail(entry.preview)
    image = (f'<img class="easel-lora-thumb" src="{src}" alt="" loading="lazy">' if src
             else '<div class="easel-lora-thumb easel-lora-nopreview">no preview</div>')
    name = tag_name(library, entry) if not entry.error else entry.name
    search = f"{entry.name} {entry.alias} {entry.family}".casefold()
    classes = "easel-lora-card" + (" easel-lora-unusable" if entry.error else "")
    return (f'<div class="{classes}" role="button" tabindex="0" data-name="{e(name)}" data-search="{e(search)}" '
            f'title="{e(_tooltip(entry))}">{image}<div class="easel-lora-name">{e(entry.name)}</div>'
            f'<span class="easel-lora-family">{e(entry.family)}</span></div>')


def cards_html(library: LoraLibrary, tab: str) -> str:
    """The browser: a search box and the cards; `data-prompt` tells the script which prompt to edit."""
    entries = library.entries()
    cards = "".join(card_html(library, entry) for entry in entries) or (
        '<p class="easel-lora-empty">No LoRAs in models/Lora. Add .safetensors files and press Refresh.</p>')
    prompt = f"#{elem_prefix(tab)}_prompt textarea"
    return (f'<div class="easel-lora-browser" data-prompt="{html.escape(prompt)}">'
            f'<input type="search" class="easel-lora-search" placeholder="Search LoRAs" aria-label="Search LoRAs">'
            f'<div class="easel-lora-cards">{cards}</div></div>')


# Runs once per card grid (`element` is the component's root; re-renders keep it, so listeners stay).
# A click appends `<lora:NAME:1>` to the prompt, or removes the tag when it is there (A1111), and fires
# `input` so Gradio's state sees the new prompt.
CARDS_JS = r"""
const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
function filter() {
  const box = element.querySelector('.easel-lora-search');
  const terms = (box ? box.value : '').toLowerCase().split(/\s+/).filter(Boolean);
  for (const card of element.querySelectorAll('.easel-lora-card')) {
    const text = card.dataset.search || '';
    card.style.display = terms.every((t) => text.includes(t)) ? '' : 'none';
  }
}
function toggle(card) {
  const root = element.querySelector('.easel-lora-browser');
  const box = root && document.querySelector(root.dataset.prompt);
  if (!box) return;
  const name = card.dataset.name;
  const present = new RegExp('[ ,]*<(?:lora|lyco):' + esc(name) + '(?::[^>]*)?>');
  let text = box.value;
  if (present.test(text)) {
    text = text.replace(present, '').trim();
  } else {
    const tag = '<lora:' + name + ':1>';
    text = !text ? tag : (/\s$/.test(text) ? text + tag : text + ' ' + tag);
  }
  box.value = text;
  box.dispatchEvent(new Event('input', {bubbles: true}));
}
element.addEventListener('click', (ev) => {
  const card = ev.target.closest('.easel-lora-card');
  if (card && element.contains(card)) toggle(card);
});
element.addEventListener('keydown', (ev) => {
  const card = ev.target.closest('.easel-lora-card');
  if (card && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); toggle(card); }
});
element.addEventListener('input', (ev) => { if (ev.target.matches('.easel-lora-search')) filter(); });
watch('value', filter);
"""

# Scoped to the component by Gradio; a template, so no "${" and no backticks here.
CARDS_CSS = """
.easel-lora-search { width: 100%; margin: 4px 0 8px; padding: 4px 8px; border-radius: var(--radius-md);
  border: 1px solid var(--border-color-primary); background: var(--input-background-fill); color: inherit;
  font-size: var(--text-md); }
.easel-lora-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(118px, 1fr)); gap: 8px;
  max-height: 420px; overflow-y: auto; }
.easel-lora-card { cursor: pointer; border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  padding: 4px; background: var(--block-background-fill); display: flex; flex-direction: column; gap: 2px; }
.easel-lora-card:hover, .easel-lora-card:focus { border-color: var(--color-accent); outline: none; }
.easel-lora-thumb { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: var(--radius-md); }
.easel-lora-nopreview { display: flex; align-items: center; justify-content: center; font-size: 0.8em;
  opacity: 0.6; background: var(--background-fill-secondary); }
.easel-lora-name { font-size: 0.85em; word-break: break-word; line-height: 1.2; }
.easel-lora-family { align-self: flex-start; font-size: 0.7em; padding: 0 6px; border-radius: 999px;
  background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary); }
.easel-lora-unusable { opacity: 0.5; }
"""


# ---- Gradio ---------------------------------------------------------------------------------------


def build_section(tab: str, manager) -> dict:
    """The slots (hidden until "Add LoRA"), then the browser. Returns only the slot fields: buttons,
    states and the card grid are not part of the request."""
    import gradio as gr

    library = library_for(manager)
    prefix = elem_prefix(tab)
    choices = slot_choices(library)
    fields: dict = {}
    rows, names, weights = [], [], []
    shown = gr.State([False] * SLOTS)  # which slots the user added
    for n in range(1, SLOTS + 1):
        name_key, weight_key = slot_fields(n)
        with gr.Row(visible=False, equal_height=True, elem_id=f"{prefix}_lora_slot_{n}") as row:
            name = gr.Dropdown(choices, value=None, label=f"LoRA {n}", elem_id=f"{prefix}_lora_{n}",
                               allow_custom_value=True, scale=3, min_width=160)  # a vanished file: the job's notice says so
            weight = gr.Slider(-2, 2, value=1, step=0.05, label="Weight", elem_id=f"{prefix}_lora_weight_{n}",
                               scale=2, min_width=160)
            remove = gr.Button("✖", elem_id=f"{prefix}_lora_remove_{n}", size="sm", scale=0, min_width=40)
        fields[name_key], fields[weight_key] = name, weight
        rows.append(row)
        names.append(name)
        weights.append(weight)

        def clear(shown: list, n=n):
            shown = [*shown]
            shown[n - 1] = False
            return shown, gr.Row(visible=False), None, 1

        remove.click(clear, inputs=shown, outputs=[shown, row, name, weight], queue=False, api_visibility="private")

    add = gr.Button("➕ Add LoRA", elem_id=f"{prefix}_lora_add", size="sm")

    def add_slot(shown: list):
        if all(shown):
            gr.Warning(f"All {SLOTS} slots are in use; more LoRAs go into the prompt as <lora:name:weight>")
            return [shown, *(gr.Row() for _ in rows)]
        shown = [*shown]
        shown[shown.index(False)] = True
        return [shown, *(gr.Row(visible=v) for v in shown)]

    add.click(add_slot, inputs=shown, outputs=[shown, *rows], queue=False, api_visibility="private")

    # The cards are made when the browser is first opened, not with the page: previews of hundreds of
    # LoRAs take seconds to shrink the first time and would weigh on every page load.
    with gr.Accordion("Browse LoRAs", open=False, elem_id=f"{prefix}_lora_browser") as browser:
        with gr.Row(equal_height=True):
            gr.Markdown("Click a card to add its tag to the prompt, again to remove it.")
            refresh = gr.Button("🔄 Refresh", elem_id=f"{prefix}_lora_refresh", size="sm", scale=0, min_width=100)
        cards = gr.HTML("", js_on_load=CARDS_JS, css_template=CARDS_CSS, apply_default_css=False,
                        elem_id=f"{prefix}_lora_cards")
    filled = gr.State(False)

    def fill(filled: bool):
        return (gr.skip() if filled else cards_html(library, tab)), True

    def rescan():
        library.refresh()
        fresh = slot_choices(library)
        return [cards_html(library, tab), True, *(gr.Dropdown(choices=fresh) for _ in names)]

    browser.expand(fill, inputs=filled, outputs=[cards, filled], queue=False, api_visibility="private")
    refresh.click(rescan, outputs=[cards, filled, *names], queue=False, api_visibility="private")
    return fields
