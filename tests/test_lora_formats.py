"""Every common LoRA file format on real tiny SD1 and SDXL models (both SDXL text encoders included),
and LoRAs for another architecture skipped with a notice and an infotext record, never applied."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import lora_files as lf
from engine_helpers import make_engine, pixels
from webui.generation.request import GenerationRequest
from webui.models.tiny import tiny_pipeline

# file name -> (how to write it, the format the library reports)
FORMATS = {
    "kohya_ldm": (lambda p: lf.kohya(p, "ldm", seed=1), "kohya-ldm"),
    "kohya_diffusers": (lambda p: lf.kohya(p, "diffusers", seed=2), "kohya-diffusers"),
    "peft": (lambda p: lf.peft(p, seed=3), "diffusers"),
    "locon": (lambda p: lf.kohya(p, "diffusers", seed=4, convs=True), "locon"),
    "loha": (lambda p: lf.lycoris(p, "loha", seed=5), "loha"),
    "lokr": (lambda p: lf.lycoris(p, "lokr", seed=6), "lokr"),
    "dora": (lambda p: lf.kohya(p, "ldm", seed=7, dora=True), "dora"),
}
SDXL_FORMATS = ("kohya_ldm", "kohya_diffusers", "peft", "loha")


def setup(tiny_checkpoint, tmp_path_factory, family: str, names, other: str):
    pipe = tiny_pipeline(family, seed=0)
    engine = make_engine(tmp_path_factory.mktemp(f"lora-{family}"), {"tiny.safetensors": tiny_checkpoint(family)},
                         save_images=False)
    folder = engine.manager.paths.folder("lora")
    for name in names:
        lf.write(folder, name, FORMATS[name][0](pipe))
    lf.write(folder, "foreign", lf.kohya(tiny_pipeline(other, seed=0), "ldm"))  # for the other architecture
    return SimpleNamespace(engine=engine, base=image(engine, "a cube"), family=family)


@pytest.fixture(scope="module")
def sd1(tiny_checkpoint, tmp_path_factory):
    return setup(tiny_checkpoint, tmp_path_factory, "sd1", FORMATS, "sdxl-base")


@pytest.fixture(scope="module")
def sdxl(tiny_checkpoint, tmp_path_factory):
    return setup(tiny_checkpoint, tmp_path_factory, "sdxl-base", SDXL_FORMATS, "sd1")


def generate(engine, prompt: str, **kw):
    return engine.generate(GenerationRequest(prompt=prompt, steps=2, width=64, height=64, seed=3, **kw))


def image(engine, prompt: str, **kw) -> np.ndarray:
    return pixels(generate(engine, prompt, **kw).images[0].image)


def check_format(model, name: str) -> None:
    from extensions.lora.library import library_for

    listed = {i["name"]: i for i in library_for(model.engine.manager).items()}
    assert listed[name]["format"] == FORMATS[name][1] and listed[name]["error"] is None
    assert listed[name]["family"] in (("sd1", "sd1/sd2") if model.family == "sd1" else ("sdxl",))
    result = generate(model.engine, f"a cube <lora:{name}:1>")
    full = pixels(result.images[0].image)
    assert result.notices == [] and f'Lora hashes: "{name}: ' in result.infotexts[0]
    assert np.abs(full - model.base).mean() > 3, "the LoRA did not change the picture"
    assert not np.array_equal(image(model.engine, f"a cube <lora:{name}:0.4>"), full)
    assert np.array_equal(image(model.engine, f"a cube <lora:{name}:0>"), model.base)
    assert np.array_equal(image(model.engine, "a cube"), model.base)


@pytest.mark.parametrize("name", list(FORMATS))
def test_sd1_format_applies_and_comes_off(sd1, name):
    check_format(sd1, name)


@pytest.mark.parametrize("name", SDXL_FORMATS)
def test_sdxl_format_applies_and_comes_off(sdxl, name):
    check_format(sdxl, name)


def test_sdxl_text_encoders_both_take_the_lora(sdxl, tmp_path):
    pipe = tiny_pipeline("sdxl-base", seed=0)
    folder = sdxl.engine.manager.paths.folder("lora")
    lf.write(folder, "te_only", lf.kohya(pipe, "ldm", seed=8, unet=False))
    one = lf.kohya(pipe, "ldm", seed=8, unet=False)
    lf.write(folder, "te1_only", {k: v for k, v in one.items() if k.startswith("lora_te1_")})
    both, te1 = image(sdxl.engine, "a cube <lora:te_only:1>"), image(sdxl.engine, "a cube <lora:te1_only:1>")
    assert not np.array_equal(both, sdxl.base) and not np.array_equal(te1, sdxl.base)
    assert not np.array_equal(both, te1)  # lora_te2_ reached the second encoder
    assert np.array_equal(image(sdxl.engine, "a cube <lora:te_only:0:1>"), sdxl.base)  # te weight 0: nothing left


def test_peft_alphas_from_diffusers_metadata_scale_the_lora(sd1):
    pipe = tiny_pipeline("sd1", seed=0)
    folder = sd1.engine.manager.paths.folder("lora")
    tensors = lf.peft(pipe, seed=9, scale=0.3)
    meta = {"lora_adapter_metadata": json.dumps({f"{c}.{k}": v for c in ("unet", "text_encoder")
                                                  for k, v in (("lora_alpha", 8), ("r", 4))})}
    lf.write(folder, "alpha8", tensors, meta)  # alpha 8 on rank 4: twice the plain file's strength
    lf.write(folder, "doubled", {k: v * 2 if "lora_B" in k else v for k, v in tensors.items()})
    assert np.array_equal(image(sd1.engine, "a cube <lora:alpha8:1>"), image(sd1.engine, "a cube <lora:doubled:1>"))


@pytest.mark.parametrize("model, wording", [("sdxl", "SD1 LoRA on an SDXL model"), ("sd1", "SDXL LoRA on an SD1 model")])
def test_a_lora_for_another_architecture_is_skipped_noticed_and_recorded(model, wording, request):
    model = request.getfixturevalue(model)
    result = generate(model.engine, "a cube <lora:foreign:1>")
    assert f"LoRA 'foreign' skipped: {wording}" in result.notices
    assert f'Lora skipped: "foreign: {wording}"' in result.infotexts[0]
    assert np.array_equal(pixels(result.images[0].image), model.base)


def test_sdxl_stack_of_three_formats_gives_the_fused_picture(sdxl):
    """Three SDXL files run unfused as one combined adapter (both text encoders and the UNet); fused, each
    file is folded in apart: the two ways must agree up to float rounding."""
    prompt = "a cube <lora:kohya_ldm:0.8> <lora:kohya_diffusers:0.5:0.9> <lora:peft:0.6>"
    unfused = image(sdxl.engine, prompt)
    fused = image(sdxl.engine, prompt, override_settings={"lora_fuse": True})
    single = image(sdxl.engine, "a cube <lora:kohya_ldm:0.8>")
    assert np.abs(unfused - single).mean() > 1  # the other two files count
    assert np.abs(unfused.astype(int) - fused.astype(int)).max() <= 2
    assert np.array_equal(image(sdxl.engine, "a cube"), sdxl.base)
