"""Request <-> infotext: what Easel writes, it reads back; what A1111 and Forge write, it understands."""

from __future__ import annotations

from webui.generation.params import infotext_for, request_from_infotext
from webui.plugins import Plugins
from webui.generation.request import (
    GenerationRequest,
    InpaintOptions,
    MaskedContent,
    Mode,
    ResizeMode,
    SDXLConditioning,
)

MODEL = {"Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly", "VAE hash": "735e4c3a44", "VAE": "vae-ft-mse.safetensors"}


def full_request() -> GenerationRequest:
    return GenerationRequest(
        mode=Mode.INPAINT,
        prompt='a cat, (masterpiece:1.2) <lora:myLora:0.8>\nsecond line: "quoted"',
        negative_prompt="blurry, lowres\nugly",
        sampler="DPM++ 2M SDE",
        schedule_type="Karras",
        steps=31,
        cfg_scale=6.5,
        width=512,
        height=768,
        seed=1234567890,
        subseed=42,
        subseed_strength=0.25,
        seed_resize_from_w=448,
        seed_resize_from_h=640,
        clip_skip=2,
        denoising_strength=0.55,
        resize_mode=ResizeMode.RESIZE_AND_FILL,
        inpaint=InpaintOptions(mask_blur=7, invert_mask=True, masked_content=MaskedContent.LATENT_NOISE,
                               only_masked=True, only_masked_padding=48),
        sdxl=SDXLConditioning(original_size=(1536, 1024), target_size=(768, 512), crops_coords_top_left=(16, 8)),
    )


def test_round_trip_restores_every_field():
    req = full_request()
    text = infotext_for(req, req.seed, req.subseed, MODEL)
    pasted = request_from_infotext(text, Plugins.builtin())
    back = pasted.request
    for name in ("mode", "prompt", "negative_prompt", "sampler", "schedule_type", "steps", "cfg_scale", "width",
                 "height", "seed", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
                 "clip_skip", "denoising_strength", "resize_mode", "inpaint", "sdxl"):
        assert getattr(back, name) == getattr(req, name), name
    assert back.checkpoint == "v1-5-pruned-emaonly"  # the checkpoints extension took the model keys
    assert back.extensions == {"checkpoints": {"vae": "vae-ft-mse.safetensors"}}
    assert pasted.unknown == {}


def test_defaults_are_left_out_and_come_back_as_defaults():
    req = GenerationRequest(prompt="a cube", steps=20, width=512, height=512, seed=3)
    text = infotext_for(req, 3, 9, {"Model hash": None, "Model": "m"})
    assert text == "a cube\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 3, Size: 512x512, Model: m, Version: Easel 0.1.0"
    back = request_from_infotext(text).request
    assert (back.mode, back.schedule_type, back.clip_skip, back.subseed_strength) == (Mode.TXT2IMG, "Automatic", 1, 0.0)


def test_a1111_txt2img_infotext_with_hires_and_extensions():
    text = (
        "masterpiece, 1girl, <lora:add_detail:0.5>\n"
        "Negative prompt: (worst quality:1.4), lowres\n"
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3057913843, Size: 512x768, "
        'Model hash: 7f96a1a9ca, Model: anything-v5, VAE hash: 235745af8d, VAE: kl-f8-anime2.ckpt, Denoising strength: 0.45, '
        'Clip skip: 2, ADetailer model: face_yolov8n.pt, ADetailer confidence: 0.3, Hires upscale: 2, '
        'Hires steps: 10, Hires upscaler: R-ESRGAN 4x+ Anime6B, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
    )
    pasted = request_from_infotext(text, Plugins.builtin())
    req = pasted.request
    assert (req.prompt, req.negative_prompt) == ("masterpiece, 1girl, <lora:add_detail:0.5>", "(worst quality:1.4), lowres")
    assert (req.steps, req.sampler, req.schedule_type, req.cfg_scale, req.seed) == (25, "DPM++ 2M", "Karras", 7.0, 3057913843)
    assert (req.width, req.height, req.clip_skip, req.checkpoint) == (512, 768, 2, "anything-v5")
    assert req.mode is Mode.TXT2IMG  # a hires-fix denoising strength is not img2img
    assert "Lora hashes" not in pasted.unknown  # the LoRA extension reads it (its tags stay in the prompt)
    assert pasted.unknown["ADetailer model"] == "face_yolov8n.pt" and pasted.unknown["Hires upscale"] == "2"


def test_old_a1111_combined_sampler_name_and_img2img_inpaint_keys():
    text = (
        "a house\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 1, Size: 768x512, Model hash: abcdef1234, "
        "Denoising strength: 0.6, Mask blur: 4, Inpaint area: Only masked, Masked area padding: 32, Version: v1.6.0"
    )
    req = request_from_infotext(text).request
    assert (req.sampler, req.schedule_type, req.cfg_scale) == ("DPM++ 2M", "Karras", 5.5)
    assert req.mode is Mode.INPAINT and req.denoising_strength == 0.6
    assert req.inpaint == InpaintOptions(mask_blur=4, only_masked=True, only_masked_padding=32)


def test_forge_infotext():
    text = (
        "a fox in snow\n"
        "Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 77, "
        "Size: 896x1152, Model hash: 7d3eb4ec38, Model: flux1-dev-bnb-nf4-v2, Version: f2.0.1v1.10.1-previous-313-g8a042934, "
        "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16"
    )
    pasted = request_from_infotext(text, Plugins.builtin())
    assert (pasted.request.width, pasted.request.height, pasted.request.seed) == (896, 1152, 77)
    assert pasted.request.schedule_type == "Simple"  # kept as written; the engine reports it as unsupported
    assert pasted.unknown == {"Distilled CFG Scale": "3.5", "Module 1": "ae", "Module 2": "clip_l", "Module 3": "t5xxl_fp16"}
