"""Infotext text and metadata, checked against what A1111 1.10 and Forge write and read."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image
from PIL.ExifTags import IFD

from webui.generation.infotext import (
    USER_COMMENT_TAG,
    decode_user_comment,
    embed_infotext,
    exif_user_comment,
    format_infotext,
    image_bytes,
    parse_infotext,
    quote,
    read_infotext,
    unquote,
)

A1111_SAMPLE = """masterpiece, best quality, 1girl, solo, (red hair:1.2), looking at viewer, <lora:add_detail:0.6>
cherry blossoms, night sky
Negative prompt: (worst quality, low quality:1.4), easynegative, bad-hands-5
lowres, watermark
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 2389471923, Size: 512x768, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, \
VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, \
ADetailer model: face_yolov8n.pt, ADetailer prompt: "smiling face, detailed eyes", ADetailer confidence: 0.3, \
ADetailer dilate erode: 4, ADetailer mask blur: 4, ADetailer denoising strength: 0.4, \
ADetailer inpaint only masked: True, ADetailer inpaint padding: 32, ADetailer model 2nd: hand_yolov8n.pt, \
ADetailer version: 24.9.0, Hires upscale: 2, Hires steps: 12, Hires upscaler: R-ESRGAN 4x+ Anime6B, \
Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03, bad-hands-5: aa7651be154c", \
Emphasis: Original, Version: v1.10.1"""

FORGE_FLUX_SAMPLE = """a photo of a red fox in the snow, golden hour, 35mm
Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 1068323912, \
Size: 896x1152, Model hash: bea01d51bd, Model: flux1-dev-bnb-nf4-v2, Version: f2.0.1v1.10.1-previous-669-gdfdcbab6, \
Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16, Diffusion in Low Bits: Automatic (fp16 LoRA)"""

FORGE_SDXL_SAMPLE = """score_9, score_8_up, 1boy, armor, castle
Negative prompt:
Steps: 25, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 6.5, Seed: 42, Size: 832x1216, \
Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Denoising strength: 0.35, \
ControlNet 0: "Module: canny, Model: diffusers_xl_canny_mid [112a778d], Weight: 1.0, Resize Mode: Crop and Resize, \
Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, \
Pixel Perfect: False, Control Mode: Balanced", Hires prompt: "1boy, armor, castle, detailed", Hires CFG Scale: 5, \
Hires resize: 1248x1824, Hires steps: 10, Hires upscaler: 4x-UltraSharp, Hires Module 1: Use same choices, \
Version: f2.0.1v1.10.1-previous-669-gdfdcbab6"""


def test_design_example_is_written_byte_for_byte():
    text = format_infotext(
        "a cat, (masterpiece:1.2) <lora:myLora:0.8>",
        "blurry",
        {
            "Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7.0, "Seed": 1234567890,
            "Size": "512x768", "Denoising strength": None, "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly",
            "Lora hashes": "myLora: 0123456789ab", "Version": "v1.10.1",
        },
    )
    assert text == (
        "a cat, (masterpiece:1.2) <lora:myLora:0.8>\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "myLora: 0123456789ab", Version: v1.10.1'
    )


def test_empty_negative_line_is_left_out_and_values_print_like_a1111():
    text = format_infotext("a cube", "", {"Steps": 4, "CFG scale": 7.5, "Denoising strength": 0.75,
                                          "Hires upscale": 2.0, "Tiling": "Tiling", "Pad conds": True})
    assert text == (
        "a cube\nSteps: 4, CFG scale: 7.5, Denoising strength: 0.75, Hires upscale: 2, Tiling, Pad conds: True"
    )


def test_prompt_without_settings_is_just_the_prompt():
    assert format_infotext("only words", "", {}) == "only words"
    assert parse_infotext("only words") == ("only words", "", {})


@pytest.mark.parametrize("key", ["a", "bad:key", "x,y", " lead", "-dash", "new\nline"])
def test_keys_a1111_cannot_read_back_are_refused(key):
    with pytest.raises(ValueError, match="cannot be read back"):
        format_infotext("p", "", {"Steps": 1, key: "v", "Seed": 2})


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        ("plain", "plain"),
        ("a, b", '"a, b"'),
        ("name: hash", '"name: hash"'),
        ("two\nlines", '"two\\nlines"'),
        ('say "hi", ok', '"say \\"hi\\", ok"'),
        ('5" tall', '5" tall'),                   # A1111 leaves inner quotes raw, and they read back fine
        ('"boxed"', '"\\"boxed\\""'),             # A1111 would write it raw and read back `boxed`
        (" padded ", '" padded "'),               # A1111 would write it raw and read back `padded`
        ("日本語, ü", '"日本語, ü"'),              # ensure_ascii=False, as A1111
        ("back\\slash: x", '"back\\\\slash: x"'),
    ],
)
def test_quote_and_unquote(raw, written):
    assert quote(raw) == written
    assert unquote(written) == raw


def test_unquote_leaves_what_is_not_a_json_string():
    assert unquote("") == ""
    assert unquote('"open') == '"open'
    assert unquote('"bad \\q escape"') == '"bad \\q escape"'


def test_many_params_round_trip():
    params = {
        "Steps": 30, "Sampler": "DPM++ 2M SDE", "Schedule type": "Exponential", "CFG scale": 4.5, "Seed": 4294967295,
        "Size": "1024x1024", "Model hash": "31e35c80fc", "Model": "sd_xl_base_1.0", "Denoising strength": 0.3,
        "Clip skip": 2, "Variation seed": 7, "Variation seed strength": 0.05, "Seed resize from": "512x512",
        "Lora hashes": "a: 0123456789ab, b: ba9876543210", "TI hashes": "neg: c74b4e810b03",
        "Hires prompt": 'line one\nline "two": x', "Quoted": '"already"', "Spaced": "  x  ", "Empty": "",
        "Slash/dash-key": "back\\slash", "Unicode": "猫, 🐱", "Bool": False, "Version": "v1.10.1",
    }
    prompt, negative = "a cat\n  on two lines ", "bad, ugly\nworse"
    got_prompt, got_negative, got = parse_infotext(format_infotext(prompt, negative, params))
    assert (got_prompt, got_negative) == ("a cat\non two lines", negative)  # A1111 strips prompt lines
    expected = {k: str(v) for k, v in params.items() if k not in ("Size", "Seed resize from")}
    expected.update({"CFG scale": "4.5", "Size-1": "1024", "Size-2": "1024",
                     "Seed resize from-1": "512", "Seed resize from-2": "512"})
    assert got == expected


def test_a1111_sample():
    prompt, negative, params = parse_infotext(A1111_SAMPLE)
    assert prompt == ("masterpiece, best quality, 1girl, solo, (red hair:1.2), looking at viewer, "
                      "<lora:add_detail:0.6>\ncherry blossoms, night sky")
    assert negative == "(worst quality, low quality:1.4), easynegative, bad-hands-5\nlowres, watermark"
    assert params == {
        "Steps": "28", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7", "Seed": "2389471923",
        "Size-1": "512", "Size-2": "768", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly",
        "VAE hash": "735e4c3a44", "VAE": "vae-ft-mse-840000-ema-pruned.safetensors", "Denoising strength": "0.45",
        "Clip skip": "2", "ADetailer model": "face_yolov8n.pt", "ADetailer prompt": "smiling face, detailed eyes",
        "ADetailer confidence": "0.3", "ADetailer dilate erode": "4", "ADetailer mask blur": "4",
        "ADetailer denoising strength": "0.4", "ADetailer inpaint only masked": "True",
        "ADetailer inpaint padding": "32", "ADetailer model 2nd": "hand_yolov8n.pt", "ADetailer version": "24.9.0",
        "Hires upscale": "2", "Hires steps": "12", "Hires upscaler": "R-ESRGAN 4x+ Anime6B",
        "Lora hashes": "add_detail: 7c6bad76eb54", "TI hashes": "easynegative: c74b4e810b03, bad-hands-5: aa7651be154c",
        "Emphasis": "Original", "Version": "v1.10.1",
    }


def test_forge_flux_sample():
    prompt, negative, params = parse_infotext(FORGE_FLUX_SAMPLE)
    assert (prompt, negative) == ("a photo of a red fox in the snow, golden hour, 35mm", "")
    assert params == {
        "Steps": "20", "Sampler": "Euler", "Schedule type": "Simple", "CFG scale": "1", "Distilled CFG Scale": "3.5",
        "Seed": "1068323912", "Size-1": "896", "Size-2": "1152", "Model hash": "bea01d51bd",
        "Model": "flux1-dev-bnb-nf4-v2", "Version": "f2.0.1v1.10.1-previous-669-gdfdcbab6", "Module 1": "ae",
        "Module 2": "clip_l", "Module 3": "t5xxl_fp16", "Diffusion in Low Bits": "Automatic (fp16 LoRA)",
    }


def test_forge_sample_with_controlnet_unit_hires_resize_and_bare_negative_line():
    prompt, negative, params = parse_infotext(FORGE_SDXL_SAMPLE)
    assert (prompt, negative) == ("score_9, score_8_up, 1boy, armor, castle", "")
    assert params["ControlNet 0"] == (
        "Module: canny, Model: diffusers_xl_canny_mid [112a778d], Weight: 1.0, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, "
        "Pixel Perfect: False, Control Mode: Balanced"
    )
    assert params["Hires prompt"] == "1boy, armor, castle, detailed"
    assert (params["Hires resize-1"], params["Hires resize-2"]) == ("1248", "1824")
    assert params["Hires Module 1"] == "Use same choices"
    assert params["CFG scale"] == "6.5" and params["Hires CFG Scale"] == "5"
    assert "Module" not in params and "Weight" not in params  # the unit's inner pairs stay inside its value


def test_last_line_with_fewer_than_three_pairs_is_prompt_text():
    prompt, negative, params = parse_infotext("a dog\nNegative prompt: cat\nstyle: anime, mood: calm")
    assert (prompt, negative, params) == ("a dog", "cat\nstyle: anime, mood: calm", {})


def test_windows_line_endings_parse_the_same():
    assert parse_infotext(A1111_SAMPLE.replace("\n", "\r\n")) == parse_infotext(A1111_SAMPLE)


def test_exif_block_is_what_piexif_dump_writes():
    # piexif.dump({"Exif": {UserComment: piexif.helper.UserComment.dump("ab,c", encoding="unicode")}}), piexif 1.1.3
    assert exif_user_comment("ab,c") == (
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x87i\x00\x04\x00\x00\x00\x01\x00\x00\x00\x1a\x00\x00\x00\x00"
        b"\x00\x01\x92\x86\x00\x07\x00\x00\x00\x10\x00\x00\x00(UNICODE\x00\x00a\x00b\x00,\x00c"
    )


TEXT = 'un chat, 日本語 🐱 "q"\nNegative prompt: flou\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 8x8'


@pytest.mark.parametrize("fmt", ["png", "jpg", "jpeg", "webp", "PNG"])
def test_embedded_text_reads_back_exactly(fmt):
    data = image_bytes(Image.new("RGB", (32, 24), (200, 10, 10)), TEXT, fmt)
    image = Image.open(io.BytesIO(data))
    assert image.format == {"png": "PNG", "webp": "WEBP"}.get(fmt.lower(), "JPEG")
    assert read_infotext(image) == TEXT


def test_png_text_chunk_is_parameters_and_jpeg_comment_is_unicode_user_comment():
    png = Image.open(io.BytesIO(image_bytes(Image.new("RGB", (8, 8)), "latin text, é", "png")))
    assert png.text == {"parameters": "latin text, é"}
    jpeg = Image.open(io.BytesIO(image_bytes(Image.new("RGB", (8, 8)), "x: 1", "jpg")))
    raw = jpeg.getexif().get_ifd(IFD.Exif)[USER_COMMENT_TAG]
    assert raw == b"UNICODE\x00" + "x: 1".encode("utf-16-be")


def test_alpha_images_encode_in_every_format():
    rgba = Image.new("RGBA", (8, 8), (1, 2, 3, 4))
    assert Image.open(io.BytesIO(image_bytes(rgba, "t", "jpg"))).mode == "RGB"
    assert Image.open(io.BytesIO(image_bytes(rgba, "t", "webp"))).mode == "RGBA"
    assert Image.open(io.BytesIO(image_bytes(rgba, "t", "png"))).getpixel((0, 0)) == (1, 2, 3, 4)


def test_png_text_after_the_image_data_is_found():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    data = buffer.getvalue()
    # an iTXt chunk placed after IDAT: keyword, NUL, uncompressed, method, no language, no translated keyword
    body = b"parameters\x00\x00\x00\x00\x00" + TEXT.encode("utf-8")
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    iend = data.rindex(b"IEND") - 4
    assert read_infotext(Image.open(io.BytesIO(data[:iend] + chunk + data[iend:]))) == TEXT


def test_no_metadata_reads_as_none():
    for fmt in ("PNG", "JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, fmt)
        assert read_infotext(Image.open(buffer)) is None
    assert image_bytes(Image.new("RGB", (4, 4)), None, "png")  # no infotext: a plain file


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"UNICODE\x00" + "a: 1".encode("utf-16-be"), "a: 1"),
        (b"UNICODE\x00" + "a: 1, 猫".encode("utf-16-le"), "a: 1, 猫"),   # writers that follow the TIFF byte order
        (b"UNICODE\x00" + "a: 1".encode("utf-16"), "a: 1"),              # with a BOM
        (b"ASCII\x00\x00\x00Steps: 20\x00\x00", "Steps: 20"),
        (b"\x00" * 8 + "unknown code, ü".encode(), "unknown code, ü"),
        (b"UNICODE\x00", None),
        ("Steps: 5", "Steps: 5"),
    ],
)
def test_foreign_user_comments(raw, text):
    assert decode_user_comment(raw) == text


def test_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match="png, jpg, jpeg, webp"):
        embed_infotext("t", "gif")


def test_jpeg_refuses_text_its_exif_cannot_hold_and_webp_takes_it():
    long_text = "x" * 40_000
    with pytest.raises(ValueError, match="too long for a JPEG"):
        image_bytes(Image.new("RGB", (4, 4)), long_text, "jpg")
    webp = image_bytes(Image.new("RGB", (4, 4)), long_text, "webp")
    assert read_infotext(Image.open(io.BytesIO(webp))) == long_text
