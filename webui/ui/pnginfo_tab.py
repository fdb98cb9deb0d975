"""PNG Info: drop an image, read its parameters (Easel's and A1111's infotext, PNG text or EXIF), send
them to a generation tab. Every extension gets its keys back through `infotext_pasted`."""

from __future__ import annotations


import gradio as gr
from PIL import Image, UnidentifiedImageError

from webui.generation.infotext import read_infotext
from webui.ui import form
from webui.ui.context import UIContext
from webui.ui.events import field_updates, info_html, params_for
from webui.ui.generate_tab import GenerationTab
from webui.ui.runner import message_html


def build_pnginfo_tab(ctx: UIContext, tabs, txt2img: GenerationTab, img2img: GenerationTab) -> None:
    with gr.Row(equal_height=False):
        with gr.Column():
            image = gr.Image(label="Source", type="filepath", elem_id="pnginfo_image", sources=["upload", "clipboard"],
                             height=420)
        with gr.Column():
            info = gr.HTML("", elem_id="pnginfo_html_info", elem_classes="infotext")
            text = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img")

    def read(path: str | None):
        if not path:
            return "", ""
        try:
            with Image.open(path) as im:
                infotext = read_infotext(im)
                details = f"{im.format} · {im.width}x{im.height}"
        except (OSError, UnidentifiedImageError) as e:
            return message_html(f"Not an image Easel can read: {e}"), ""
        if not infotext:
            return message_html(f"No generation parameters in this image ({details}).", kind="info"), ""
        return info_html(infotext), infotext

    image.change(read, inputs=image, outputs=[info, text], queue=False, api_name="png_info")

    def send(target: GenerationTab, tab_id: str):
        def handler(infotext: str, path: str | None):
            values = params_for(infotext, ctx)
            updates = field_updates(target, values)
            updates[tabs] = gr.Tabs(selected=tab_id)
            if target.name == "img2img" and path:
                picture = Image.open(path).convert("RGB")
                updates[target.fields["init_image"]] = picture
                updates[target.fields["img2img_source"]] = form.SOURCES[0]
                updates[target.outputs["source_tabs"]] = gr.Tabs(selected="img2img")
            return updates

        outputs = [tabs, *{c for k, c in target.fields.items()}]
        if target.name == "img2img":
            outputs.append(target.outputs["source_tabs"])
        return handler, outputs

    handler, outputs = send(txt2img, "txt2img")
    to_txt2img.click(handler, inputs=[text, image], outputs=outputs, queue=False, api_visibility="private")
    handler, outputs = send(img2img, "img2img")
    to_img2img.click(handler, inputs=[text, image], outputs=outputs, queue=False, api_visibility="private")
