"""The txt2img and img2img tabs (img2img holds inpaint as sub-tabs, as in A1111), with A1111's elem_ids.

`build_generation_tab` only lays out components and returns them by form key (`webui/ui/form.py`);
`webui/ui/events.py` wires them to the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from webui.generation.request import GenerationRequest, InpaintOptions
from webui.generation.samplers import SAMPLERS, SCHEDULE_TYPES
from webui.plugins import Plugins
from webui.ui import form
from webui.ui.contributions import build_guarded, collect

DEFAULTS = GenerationRequest()


@dataclass
class GenerationTab:
    name: str  # "txt2img" | "img2img"
    fields: dict[str, Any] = field(default_factory=dict)  # form key -> component
    buttons: dict[str, Any] = field(default_factory=dict)  # generate, interrupt, skip, random_seed, ...
    outputs: dict[str, Any] = field(default_factory=dict)  # progress, preview, gallery, info, results
    counters: dict[str, Any] = field(default_factory=dict)  # prompt field -> token counter
    source_tabs: dict[str, Any] = field(default_factory=dict)  # img2img: sub-tab label -> gr.Tab
    section_failures: list[str] = field(default_factory=list)


def build_generation_tab(name: str, plugins: Plugins, engine, defaults: dict[str, Any]) -> GenerationTab:
    """Components of one tab, created inside the caller's `gr.Tab` context."""
    tab = GenerationTab(name)
    f, b = tab.fields, tab.buttons
    with gr.Row(elem_id=f"{name}_toprow"):
        with gr.Column(scale=6, min_width=300):
            for key, label, elem in (("prompt", "Prompt", f"{name}_prompt"),
                                     ("negative_prompt", "Negative prompt", f"{name}_neg_prompt")):
                f[key] = gr.Textbox(label=label, elem_id=elem, lines=3, max_lines=12, placeholder=f"{label} (Ctrl+Enter generates)")
                counter = "token_counter" if key == "prompt" else "negative_token_counter"
                tab.counters[key] = gr.HTML("<span>0/75</span>", elem_id=f"{name}_{counter}", elem_classes="token-counter")
        with gr.Column(scale=1, min_width=160, elem_id=f"{name}_actions"):
            b["generate"] = gr.Button("Generate", variant="primary", elem_id=f"{name}_generate", size="lg")
            with gr.Row():
                b["interrupt"] = gr.Button("Interrupt", elem_id=f"{name}_interrupt", size="sm")
                b["skip"] = gr.Button("Skip", elem_id=f"{name}_skip", size="sm")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320, elem_id=f"{name}_settings"):
            if name == "img2img":
                _image_inputs(tab)
            _sampling_controls(tab, defaults)
            if name == "img2img":
                _inpaint_controls(tab)
            tab.section_failures = _extension_sections(tab, plugins, engine)
        with gr.Column(scale=1, min_width=320, elem_id=f"{name}_results"):
            _results(tab)
    return tab


def _image_inputs(tab: GenerationTab) -> None:
    f = tab.fields
    with gr.Tabs(elem_id="mode_img2img") as tabs:
        with gr.Tab(form.SOURCES[0], id="img2img", elem_id="img2img_img2img_tab") as t:
            f["init_image"] = gr.Image(label="Image for img2img", type="pil", elem_id="img2img_image",
                                       sources=["upload", "clipboard"], image_mode="RGBA", height=360)
            tab.source_tabs[form.SOURCES[0]] = t
        with gr.Tab(form.SOURCES[1], id="inpaint", elem_id="img2img_inpaint_tab") as t:
            f["inpaint_sketch"] = gr.ImageMask(label="Image for inpainting with mask", type="pil", elem_id="img2maskimg",
                                               sources=["upload", "clipboard"], height=420, format="png",
                                               layers=False, brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"))
            tab.source_tabs[form.SOURCES[1]] = t
        with gr.Tab(form.SOURCES[2], id="inpaint_upload", elem_id="img2img_inpaint_upload_tab") as t:
            with gr.Row():
                f["inpaint_base"] = gr.Image(label="Image", type="pil", elem_id="img_inpaint_base", image_mode="RGBA")
                f["inpaint_mask"] = gr.Image(label="Mask (white = repaint)", type="pil", elem_id="img_inpaint_mask",
                                             image_mode="RGBA")
            tab.source_tabs[form.SOURCES[2]] = t
    tab.outputs["source_tabs"] = tabs
    f["img2img_source"] = gr.State(form.SOURCES[0])
    f["resize_mode"] = gr.Radio(list(form.RESIZE_MODES), value=form.RESIZE_MODES[0], label="Resize mode",
                                elem_id="img2img_resize_mode")


def _sampling_controls(tab: GenerationTab, defaults: dict[str, Any]) -> None:
    name, f, b = tab.name, tab.fields, tab.buttons
    with gr.Row():
        f["sampler"] = gr.Dropdown([s.name for s in SAMPLERS], value=DEFAULTS.sampler, label="Sampling method",
                                   elem_id=f"{name}_sampling", allow_custom_value=True)  # aliases; the engine checks
        f["schedule_type"] = gr.Dropdown([t.label for t in SCHEDULE_TYPES], value=DEFAULTS.schedule_type,
                                         label="Schedule type", elem_id=f"{name}_scheduler", allow_custom_value=True)
    f["steps"] = gr.Slider(1, 150, value=DEFAULTS.steps, step=1, label="Sampling steps", elem_id=f"{name}_steps")
    with gr.Row():
        with gr.Column(scale=4):
            f["width"] = gr.Slider(64, 2048, value=defaults.get("width", 512), step=8, label="Width", elem_id=f"{name}_width")
            f["height"] = gr.Slider(64, 2048, value=defaults.get("height", 512), step=8, label="Height", elem_id=f"{name}_height")
        b["swap"] = gr.Button("⇅", elem_id=f"{name}_res_switch_btn", size="sm", scale=0, min_width=40)
        with gr.Column(scale=2):
            f["batch_count"] = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{name}_batch_count")
            f["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{name}_batch_size")
    f["cfg_scale"] = gr.Slider(1, 30, value=DEFAULTS.cfg_scale, step=0.5, label="CFG Scale", elem_id=f"{name}_cfg_scale")
    if name == "img2img":
        f["denoising_strength"] = gr.Slider(0, 1, value=DEFAULTS.denoising_strength, step=0.01,
                                            label="Denoising strength", elem_id="img2img_denoising_strength")
    with gr.Row(elem_id=f"{name}_seed_row"):
        f["seed"] = gr.Number(value=-1, label="Seed", precision=0, elem_id=f"{name}_seed", scale=4)
        b["random_seed"] = gr.Button("🎲", elem_id=f"{name}_random_seed", size="sm", scale=0, min_width=40)
        b["reuse_seed"] = gr.Button("♻", elem_id=f"{name}_reuse_seed", size="sm", scale=0, min_width=40)
    with gr.Accordion("Variation seed", open=False, elem_id=f"{name}_subseed_show"):
        with gr.Row():
            f["subseed"] = gr.Number(value=-1, label="Variation seed", precision=0, elem_id=f"{name}_subseed", scale=4)
            b["random_subseed"] = gr.Button("🎲", elem_id=f"{name}_random_subseed", size="sm", scale=0, min_width=40)
            b["reuse_subseed"] = gr.Button("♻", elem_id=f"{name}_reuse_subseed", size="sm", scale=0, min_width=40)
        f["subseed_strength"] = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                          elem_id=f"{name}_subseed_strength")
        with gr.Row():
            f["seed_resize_from_w"] = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from width",
                                                elem_id=f"{name}_seed_resize_from_w")
            f["seed_resize_from_h"] = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from height",
                                                elem_id=f"{name}_seed_resize_from_h")


def _inpaint_controls(tab: GenerationTab) -> None:
    f, d = tab.fields, InpaintOptions()
    with gr.Group(visible=False, elem_id="img2img_inpaint_controls") as group:
        f["inpaint.mask_blur"] = gr.Slider(0, 64, value=d.mask_blur, step=1, label="Mask blur", elem_id="img2img_mask_blur")
        f["inpaint.invert_mask"] = gr.Radio(list(form.MASK_MODES), value=form.MASK_MODES[0], label="Mask mode",
                                            elem_id="img2img_mask_mode")
        f["inpaint.masked_content"] = gr.Radio(list(form.MASKED_CONTENT), value=form.MASKED_CONTENT[d.masked_content],
                                               label="Masked content", elem_id="img2img_inpainting_fill")
        with gr.Row():
            f["inpaint.only_masked"] = gr.Radio(list(form.INPAINT_AREAS), value=form.INPAINT_AREAS[0],
                                                label="Inpaint area", elem_id="img2img_inpaint_full_res")
            f["inpaint.only_masked_padding"] = gr.Slider(0, 256, value=d.only_masked_padding, step=4,
                                                         label="Only masked padding, pixels",
                                                         elem_id="img2img_inpaint_full_res_padding")
    tab.outputs["inpaint_controls"] = group


def _extension_sections(tab: GenerationTab, plugins: Plugins, engine) -> list[str]:
    """Each extension's `ui_section` for this tab (img2img also gets the "inpaint" ones) in an accordion."""
    failures: list[str] = []
    built_names: set[str] = set()  # a section registered for both img2img and inpaint appears once
    for hook_tab in ("txt2img",) if tab.name == "txt2img" else ("img2img", "inpaint"):
        for section in collect(plugins, "ui_section", failures, tab=hook_tab, engine=engine):
            if section.name in built_names:
                continue
            built_names.add(section.name)
            with gr.Accordion(section.title, open=section.open, elem_id=f"{tab.name}_{section.name}_section"):
                built, error = build_guarded("extension section", section.name, section.build, failures)
                if error:
                    gr.Markdown(f"This section failed to load: `{error}`")
            tab.fields.update({form.ext_key(section.name, k): c for k, c in (built or {}).items()})
    return failures


def _results(tab: GenerationTab) -> None:
    name, o, b = tab.name, tab.outputs, tab.buttons
    o["progress"] = gr.HTML("", elem_id=f"{name}_progress", elem_classes="easel-progress-box")
    o["preview"] = gr.Image(label="Live preview", interactive=False, elem_id=f"{name}_live_preview",
                            elem_classes="easel-live-preview", format="png", height=256)  # hidden while empty (CSS)
    o["gallery"] = gr.Gallery(label="Output", elem_id=f"{name}_gallery", format="png", columns=2, height=520,
                              object_fit="contain", interactive=False, buttons=["download", "fullscreen"], preview=True)
    with gr.Row(elem_id=f"{name}_results_buttons"):
        b["send_to_img2img"] = gr.Button("Send to img2img", elem_id=f"{name}_send_to_img2img", size="sm")
        b["send_to_inpaint"] = gr.Button("Send to inpaint", elem_id=f"{name}_send_to_inpaint", size="sm")
        b["open_folder"] = gr.Button("📂 Open folder", elem_id=f"{name}_open_folder", size="sm")
    o["info"] = gr.HTML("", elem_id=f"html_info_{name}", elem_classes="infotext")
    o["results"] = gr.State({"infotexts": [], "seeds": [], "subseeds": [], "images": [], "selected": 0})
