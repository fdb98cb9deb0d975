"""The generation tabs' control values <-> `GenerationRequest` (webui/ui/form.py), on real PIL images:
what Gradio hands over (floats from sliders, `gr.ImageMask` dicts, RGBA uploads) and PNG Info's "Send to"."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from webui.generation.params import infotext_for, request_from_infotext
from webui.generation.request import (GenerationLimits, GenerationRequest, InpaintOptions, MaskedContent, Mode,
                                      ResizeMode)
from webui.ui.form import (FormError, ext_key, form_from_request, refusal, request_from_form,
                           sketch_image_and_mask)


def rgb(size=(64, 64), color=(200, 30, 90)) -> Image.Image:
    return Image.new("RGB", size, color)


def layer(box=(16, 16, 48, 48), size=(64, 64)) -> Image.Image:
    """A transparent brush layer with an opaque white square painted on it."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((255, 255, 255, 255), box)
    return image


def editor(layers) -> dict:
    background = rgb()
    return {"background": background, "layers": layers, "composite": background.convert("RGBA")}


def square(box=(16, 16, 48, 48), size=(64, 64)) -> np.ndarray:
    expected = np.zeros((size[1], size[0]), dtype=np.uint8)
    expected[box[1]:box[3], box[0]:box[2]] = 255
    return expected


def test_txt2img_values_become_request_fields():
    values = {"prompt": "a red cube", "negative_prompt": "blur", "sampler": "Euler a", "schedule_type": "Karras",
              "steps": 20.0, "cfg_scale": 4.5, "width": 320.0, "height": 192.0, "seed": -1.0, "subseed": 7.0,
              "subseed_strength": 0.3, "batch_count": 2.0, "batch_size": 3.0, "seed_resize_from_w": None,
              ext_key("hello", "greeting"): "hi", ext_key("hello", "times"): 2, "ext/lora/a/b": True,
              "unrelated_control": "ignored"}
    req = request_from_form("txt2img", values, {"clip_skip": 2})
    assert req.mode is Mode.TXT2IMG and req.init_image is None
    assert (req.prompt, req.negative_prompt) == ("a red cube", "blur")
    assert (req.sampler, req.schedule_type) == ("Euler a", "Karras")
    for name, value in dict(steps=20, width=320, height=192, seed=-1, subseed=7, batch_count=2, batch_size=3).items():
        assert getattr(req, name) == value and type(getattr(req, name)) is int, name
    assert (req.cfg_scale, req.subseed_strength, req.clip_skip) == (4.5, 0.3, 2)
    assert req.seed_resize_from_w == 0  # None: not given, the default stays
    assert req.extensions == {"hello": {"greeting": "hi", "times": 2}, "lora": {"a/b": True}}
    assert request_from_form("txt2img", {}) == GenerationRequest()


def test_img2img_needs_an_init_image():
    with pytest.raises(FormError, match="Drop an image into img2img") as caught:
        request_from_form("img2img", {"prompt": "x", "init_image": None})
    assert refusal(caught.value) == "Drop an image into img2img first"


def test_img2img_takes_an_rgba_upload_as_rgb():
    upload = Image.new("RGBA", (96, 64), (10, 20, 30, 128))
    values = {"init_image": upload, "img2img_source": "img2img", "resize_mode": "Resize and fill",
              "denoising_strength": 0.4, "steps": 5.0}
    req = request_from_form("img2img", values)
    assert req.mode is Mode.IMG2IMG and req.mask is None
    assert req.init_image.mode == "RGB" and req.init_image.size == (96, 64)
    assert req.init_image.getpixel((0, 0)) == (10, 20, 30)
    assert req.resize_mode is ResizeMode.RESIZE_AND_FILL and req.denoising_strength == 0.4 and req.steps == 5
    assert req.validate(GenerationLimits())[0].init_image.size == (96, 64)  # the engine accepts it


@pytest.mark.parametrize("label, mode", [("Just resize", ResizeMode.JUST_RESIZE),
                                         ("Crop and resize", ResizeMode.CROP_AND_RESIZE)])
def test_resize_mode_labels(label, mode):
    assert request_from_form("img2img", {"init_image": rgb(), "resize_mode": label}).resize_mode is mode


def test_inpaint_sketch_mask_is_white_exactly_where_painted():
    values = {"img2img_source": "Inpaint", "inpaint_sketch": editor([layer()]), "inpaint.mask_blur": 8.0,
              "inpaint.invert_mask": "Inpaint not masked", "inpaint.masked_content": "latent noise",
              "inpaint.only_masked": "Only masked", "inpaint.only_masked_padding": 48.0}
    req = request_from_form("img2img", values)
    assert req.mode is Mode.INPAINT
    assert req.init_image.mode == "RGB" and req.init_image.getpixel((32, 32)) == (200, 30, 90)  # not the strokes
    assert req.mask.mode == "L" and req.mask.size == (64, 64)
    assert np.array_equal(np.asarray(req.mask), square())
    assert req.inpaint == InpaintOptions(mask_blur=8, invert_mask=True, masked_content=MaskedContent.LATENT_NOISE,
                                         only_masked=True, only_masked_padding=48)


def test_inpaint_sketch_joins_layers_and_faint_strokes():
    faint = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    faint.putpixel((2, 60), (255, 0, 0, 1))
    image, mask = sketch_image_and_mask(editor([layer((0, 0, 8, 8)), None, faint, layer((40, 40, 64, 64))]))
    expected = np.maximum(square((0, 0, 8, 8)), square((40, 40, 64, 64)))
    expected[60, 2] = 255
    assert np.array_equal(np.asarray(mask), expected)


@pytest.mark.parametrize("layers", [[], None, [Image.new("RGBA", (64, 64), (255, 255, 255, 0))]])
def test_inpaint_sketch_with_nothing_painted_is_refused(layers):
    with pytest.raises(FormError, match="mask is empty"):
        request_from_form("img2img", {"img2img_source": "Inpaint", "inpaint_sketch": editor(layers)})


@pytest.mark.parametrize("sketch", [None, {"background": None, "layers": [layer()], "composite": None}])
def test_inpaint_sketch_without_an_image_is_refused(sketch):
    with pytest.raises(FormError, match="Drop an image into Inpaint"):
        request_from_form("img2img", {"img2img_source": "Inpaint", "inpaint_sketch": sketch})


def test_inpaint_options_default_labels():
    values = {"img2img_source": "Inpaint", "inpaint_sketch": editor([layer()]), "inpaint.invert_mask": "Inpaint masked",
              "inpaint.only_masked": "Whole picture", "inpaint.masked_content": "fill"}
    assert request_from_form("img2img", values).inpaint == InpaintOptions(masked_content=MaskedContent.FILL)


def test_inpaint_upload_takes_image_and_mask():
    mask = Image.fromarray(square()).convert("RGBA")  # the upload control hands every image over as RGBA
    values = {"img2img_source": "Inpaint upload", "inpaint_base": Image.new("RGBA", (64, 64), (1, 2, 3, 255)),
              "inpaint_mask": mask}
    req = request_from_form("img2img", values)
    assert req.mode is Mode.INPAINT and req.init_image.mode == "RGB" and req.init_image.getpixel((0, 0)) == (1, 2, 3)
    assert req.mask.mode == "L" and np.array_equal(np.asarray(req.mask), square())


def test_inpaint_upload_of_a_transparent_mask_uses_its_alpha():
    """A1111's rule: white strokes on a transparent background mask only the strokes."""
    mask = Image.new("RGBA", (64, 64), (255, 255, 255, 0))
    mask.paste((255, 255, 255, 255), (16, 16, 48, 48))
    values = {"img2img_source": "Inpaint upload", "inpaint_base": rgb(), "inpaint_mask": mask}
    assert np.array_equal(np.asarray(request_from_form("img2img", values).mask), square())


@pytest.mark.parametrize("missing, message", [("inpaint_base", "needs an image"), ("inpaint_mask", "needs a mask")])
def test_inpaint_upload_needs_both_images(missing, message):
    values = {"img2img_source": "Inpaint upload", "inpaint_base": rgb(), "inpaint_mask": Image.fromarray(square())}
    values[missing] = None
    with pytest.raises(FormError, match=message):
        request_from_form("img2img", values)


def full_request() -> GenerationRequest:
    return GenerationRequest(
        mode=Mode.INPAINT, prompt="a red cube", negative_prompt="blur", sampler="Euler a", schedule_type="Karras",
        steps=7, cfg_scale=4.5, width=320, height=192, seed=42, subseed=7, subseed_strength=0.3,
        seed_resize_from_w=256, seed_resize_from_h=128, batch_count=2, batch_size=3, denoising_strength=0.6,
        resize_mode=ResizeMode.CROP_AND_RESIZE,
        inpaint=InpaintOptions(mask_blur=9, invert_mask=True, masked_content=MaskedContent.LATENT_NOTHING,
                               only_masked=True, only_masked_padding=40),
        extensions={"hello": {"greeting": "hi"}})


FIELDS = ("mode", "prompt", "negative_prompt", "sampler", "schedule_type", "steps", "cfg_scale", "width", "height",
          "seed", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "batch_count",
          "batch_size", "denoising_strength", "resize_mode", "inpaint", "extensions")


def test_form_round_trip_keeps_every_field():
    req = full_request()
    values = form_from_request(req)
    assert values["sampler"] == "Euler a" and values["resize_mode"] == "Crop and resize"
    assert values["inpaint.invert_mask"] == "Inpaint not masked" and values["inpaint.only_masked"] == "Only masked"
    assert values[ext_key("hello", "greeting")] == "hi"
    back = request_from_form("img2img", {**values, "img2img_source": "Inpaint upload", "inpaint_base": rgb(),
                                         "inpaint_mask": Image.fromarray(square())})
    for name in FIELDS:
        assert getattr(back, name) == getattr(req, name), name
    plain = FIELDS[1:17]  # the txt2img tab's own fields: no mode, resize mode or inpaint options
    txt = request_from_form("txt2img", form_from_request(GenerationRequest(**{k: getattr(req, k) for k in plain})))
    assert [getattr(txt, k) for k in plain] == [getattr(req, k) for k in plain]


def test_form_from_request_leaves_out_unset_sizes_and_inpaint_options():
    values = form_from_request(GenerationRequest())
    assert "width" not in values and "height" not in values
    assert not any(key.startswith(("inpaint.", "ext/")) for key in values)


def test_infotext_round_trip_fills_the_form():
    req = full_request()
    text = infotext_for(req, seed=1234, subseed=99)
    pasted = request_from_infotext(text).request
    values = form_from_request(pasted)
    assert (values["prompt"], values["negative_prompt"]) == ("a red cube", "blur")
    assert (values["steps"], values["sampler"], values["schedule_type"]) == (7, "Euler a", "Karras")
    assert values["cfg_scale"] == 4.5
    assert (values["width"], values["height"], values["seed"]) == (320, 192, 1234)
    assert (values["subseed"], values["subseed_strength"]) == (99, 0.3)
    assert (values["seed_resize_from_w"], values["seed_resize_from_h"], values["denoising_strength"]) == (256, 128, 0.6)
    assert values["resize_mode"] == "Crop and resize" and values["inpaint.mask_blur"] == 9
    assert values["inpaint.masked_content"] == "latent nothing" and values["inpaint.only_masked_padding"] == 40
    back = request_from_form("img2img", {**values, "img2img_source": "Inpaint", "inpaint_sketch": editor([layer()])})
    assert back.inpaint == req.inpaint and (back.steps, back.width, back.seed) == (7, 320, 1234)
