"""A1111's /sdapi/v1 API on a real server (uvicorn on 127.0.0.1, a free port) over real tiny checkpoints,
driven with `requests` and bodies shaped as A1111's documentation and client libraries send them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from api_helpers import Client, b64_png, decode, info_of, serving
from engine_helpers import linked_paths, picture, square_mask
from webui.api import create_app
from webui.config import Config
from webui.core_settings import CORE_SETTINGS, apply_to_engine
from webui.generation.engine import Engine
from webui.generation.infotext import read_infotext
from webui.models.manager import ModelManager
from webui.plugins import Plugins

SMALL = {"steps": 2, "width": 64, "height": 64}
# What the `webuiapi` client library (mix1009/sdwebuiapi) sends for `api.txt2img(prompt=..., seed=...)`.
WEBUIAPI_TXT2IMG = {
    "enable_hr": False, "denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2,
    "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "prompt": "a red cube",
    "styles": [], "seed": 11, "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0,
    "seed_resize_from_w": 0, "sampler_name": "Euler a", "batch_size": 1, "n_iter": 1, "steps": 2, "cfg_scale": 7.0,
    "width": 64, "height": 64, "restore_faces": False, "tiling": False, "do_not_save_samples": False,
    "do_not_save_grid": False, "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
    "s_noise": 1, "override_settings": {}, "override_settings_restore_afterwards": True, "script_args": [],
    "sampler_index": "Euler a", "script_name": None, "send_images": True, "save_images": False,
    "alwayson_scripts": {},
}


@pytest.fixture(scope="module")
def api(tiny_checkpoint, tmp_path_factory):
    data = tmp_path_factory.mktemp("api-data")
    paths = linked_paths(data, {"tiny-sd1.safetensors": tiny_checkpoint("sd1"),
                                "tiny-sdxl.safetensors": tiny_checkpoint("sdxl-base")})
    from lora_files import kohya, write
    from webui.models.tiny import tiny_pipeline

    write(paths.folder("lora"), "film", kohya(tiny_pipeline("sd1", seed=0), "ldm", seed=1))
    (data / "styles.csv").write_text('name,prompt,negative_prompt\nshiny,"{prompt}, shiny",dull\n', encoding="utf-8")
    plugins = Plugins.builtin()
    engine = Engine(ModelManager(paths, plugins=plugins), plugins=plugins)
    config = Config(data / "config.json", [*CORE_SETTINGS, *plugins.settings()])
    config.update({"sd_model_checkpoint": "tiny-sd1.safetensors"})
    apply_to_engine(config, engine)
    config.on_change(lambda changed: apply_to_engine(config, engine))
    with serving(create_app(engine, plugins, config=config, cmd_flags={"api": True})) as base:
        yield Client(base), engine, config


def test_txt2img_round_trip_carries_infotext_and_a1111_info(api):
    client, _, _ = api
    response = client.post("txt2img", {"prompt": "a red cube", "negative_prompt": "blurry", "seed": 7,
                                       "sampler_name": "Euler", "batch_size": 2, **SMALL})
    info = info_of(response)
    body = response.json()
    images = [decode(b) for b in body["images"]]
    assert [im.size for im in images] == [(64, 64), (64, 64)] and images[0].format == "PNG"
    assert info["all_seeds"] == [7, 8] and info["seed"] == 7 and info["sd_model_name"] == "tiny-sd1"
    assert info["infotexts"][1] == read_infotext(images[1]) and "Seed: 8" in info["infotexts"][1]
    for key in ("prompt", "all_prompts", "negative_prompt", "subseed", "all_subseeds", "width", "height",
                "sampler_name", "cfg_scale", "steps", "batch_size", "sd_model_hash", "sd_vae_name",
                "denoising_strength", "extra_generation_params", "index_of_first_image", "job_timestamp",
                "clip_skip"):
        assert key in info, key
    assert body["parameters"]["prompt"] == "a red cube" and body["parameters"]["n_iter"] == 1  # the request back
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_the_same_request_gives_the_same_pixels_and_the_webuiapi_payload_works(api):
    client, _, _ = api
    first, again = (client.post("txt2img", WEBUIAPI_TXT2IMG) for _ in range(2))
    assert info_of(first)["sampler_name"] == "Euler a" and info_of(first)["seed"] == 11
    assert np.array_equal(np.asarray(decode(first.json()["images"][0])), np.asarray(decode(again.json()["images"][0])))
    assert "eta" not in info_of(first)["easel_ignored"]  # A1111's defaults are not reported as ignored
    other = client.post("txt2img", {**WEBUIAPI_TXT2IMG, "eta": 0.5})
    assert info_of(other)["easel_ignored"] == ["eta"]


@pytest.mark.parametrize("sampler, scheduler, label", [
    ("euler a", None, "Euler a"), ("k_dpmpp_2m", "karras", "DPM++ 2M"), ("DPM++ 2M Karras", None, "DPM++ 2M"),
    ("Euler", "SGM Uniform", "Euler"),
])
def test_samplers_by_name_alias_and_label_any_case(api, sampler, scheduler, label):
    client, _, _ = api
    body = {"prompt": "a cube", "sampler_name": sampler, "seed": 1, **SMALL}
    if scheduler:
        body["scheduler"] = scheduler
    info = info_of(client.post("txt2img", body))
    assert info["sampler_name"] == label
    if scheduler or "Karras" in sampler:
        assert "Schedule type: " in info["infotexts"][0]


def test_img2img_and_inpaint_round_trips(api):
    client, _, _ = api
    init = picture(64, seed=3)
    body = {"prompt": "a cube", "init_images": [b64_png(init, data_url=True)], "denoising_strength": 0.5,
            "seed": 3, "sampler_name": "Euler", **SMALL}
    info = info_of(client.post("img2img", body))
    assert "Denoising strength: 0.5" in info["infotexts"][0] and info["denoising_strength"] == 0.5
    mask = square_mask(64)
    inpaint = {**body, "mask": b64_png(mask), "inpainting_fill": 1, "inpaint_full_res": False, "mask_blur": 0,
               "denoising_strength": 1.0}
    response = client.post("img2img", inpaint)
    image = np.asarray(decode(response.json()["images"][0]).convert("RGB"), dtype=np.int16)
    assert "Mask blur: 0" in info_of(response)["infotexts"][0]
    original = np.asarray(init.convert("RGB"), dtype=np.int16)
    outside = np.asarray(mask) == 0
    assert np.abs(image[outside] - original[outside]).max() <= 2  # unmasked pixels are kept (pasted back)
    assert np.abs(image[~outside] - original[~outside]).mean() > 5  # masked pixels were repainted
    assert response.json()["parameters"]["init_images"] is None  # A1111 leaves images out unless asked


def test_size_left_out_follows_the_model_and_override_settings_switch_it(api):
    client, engine, _ = api
    sdxl = info_of(client.post("txt2img", {"prompt": "a cube", "steps": 1, "width": 64, "height": 64,
                                           "override_settings": {"sd_model_checkpoint": "tiny-sdxl"}}))
    assert sdxl["sd_model_name"] == "tiny-sdxl"
    sd1 = info_of(client.post("txt2img", {"prompt": "a cube", "steps": 1}))
    assert sd1["sd_model_name"] == "tiny-sd1" and (sd1["width"], sd1["height"]) == (512, 512)


def test_options_read_and_switch_the_model(api):
    client, engine, config = api
    options = client.get("options").json()
    for key in ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "samples_format", "outdir_samples"):
        assert key in options, key
    assert options["sd_model_checkpoint"].startswith("tiny-sd1.safetensors")
    try:
        assert client.post("options", {"sd_model_checkpoint": "tiny-sdxl.safetensors"}).status_code == 200
        assert client.get("options").json()["sd_model_checkpoint"].startswith("tiny-sdxl.safetensors")
        assert json.loads(config.path.read_text())["sd_model_checkpoint"].startswith("tiny-sdxl")  # saved, like A1111
        assert info_of(client.post("txt2img", {"prompt": "x", **SMALL}))["sd_model_name"] == "tiny-sdxl"
        refused = client.post("options", {"sd_model_checkpoint": "no-such-model"})
        assert refused.status_code == 422 and "sd_model_checkpoint" in refused.json()["detail"]
        assert client.post("options", {"outdir_samples": "/etc"}).status_code == 422  # no paths from clients
    finally:
        client.post("options", {"sd_model_checkpoint": "tiny-sd1.safetensors"})


def test_saved_clip_skip_applies_and_a_request_override_wins(api):
    client, _, _ = api
    assert client.post("options", {"CLIP_stop_at_last_layers": 2}).status_code == 200
    try:
        assert info_of(client.post("txt2img", {"prompt": "x", **SMALL}))["clip_skip"] == 2
        override = {"prompt": "x", "override_settings": {"CLIP_stop_at_last_layers": 1}, **SMALL}
        assert "Clip skip" not in info_of(client.post("txt2img", override))["infotexts"][0]
    finally:
        client.post("options", {"CLIP_stop_at_last_layers": 1})


def test_save_images_and_send_images(api):
    client, engine, _ = api
    outputs = engine.manager.paths.outputs_dir
    before = set(outputs.rglob("*.png")) if outputs.exists() else set()
    not_sent = client.post("txt2img", {"prompt": "x", "send_images": False, **SMALL})
    assert not_sent.json()["images"] == [] and set(outputs.rglob("*.png")) == before  # A1111's API saves on request
    client.post("txt2img", {"prompt": "x", "save_images": True, "seed": 3, **SMALL})
    saved = set(outputs.rglob("*.png")) - before
    assert len(saved) == 1 and "Seed: 3" in read_infotext(Image.open(saved.pop()))


def test_styles_apply_and_are_listed(api):
    client, _, _ = api
    assert client.get("prompt-styles").json() == [{"name": "shiny", "prompt": "{prompt}, shiny", "negative_prompt": "dull"}]
    info = info_of(client.post("txt2img", {"prompt": "a cube", "styles": ["shiny", "unknown"], **SMALL}))
    assert info["prompt"] == "a cube, shiny" and info["negative_prompt"] == "dull"


def test_png_info_splits_the_parameters_like_a1111(api):
    client, _, _ = api
    image = client.post("txt2img", {"prompt": "a cube", "seed": 5, **SMALL}).json()["images"][0]
    info = client.post("png-info", {"image": image}).json()
    assert info["info"].startswith("a cube\nSteps: 2")
    assert info["parameters"]["Seed"] == 5 and info["parameters"]["Size-1"] == 64
    assert info["parameters"]["Prompt"] == "a cube"


def test_lists_have_a1111_shapes(api):
    client, _, _ = api
    models = client.get("sd-models").json()
    assert {m["model_name"] for m in models} == {"tiny-sd1", "tiny-sdxl"}
    assert set(models[0]) >= {"title", "model_name", "hash", "sha256", "filename", "config"}
    samplers = client.get("samplers").json()
    assert {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {}} in samplers
    schedulers = client.get("schedulers").json()
    assert any(s["name"] == "karras" and s["label"] == "Karras" for s in schedulers)
    assert client.get("scripts").json() == {"txt2img": ["refiner"], "img2img": ["refiner"]}
    assert client.get("sd-vae").json() == [] and client.get("loras").status_code == 200
    assert client.get("embeddings").json() == {"loaded": {}, "skipped": {}}
    assert {e["name"] for e in client.get("extensions").json()} >= {"checkpoints"}
    assert client.get("memory").json()["ram"]["total"] > 0
    assert client.get("cmd-flags").json() == {"api": True}
    for path in ("upscalers", "latent-upscale-modes"):
        assert isinstance(client.get(path).json(), list)
    for path in ("refresh-checkpoints", "refresh-vae", "refresh-loras"):
        assert client.post(path).status_code == 200
    assert client.get("/docs").status_code == 200 and "/sdapi/v1/txt2img" in client.get("/openapi.json").json()["paths"]


def test_unload_and_reload_checkpoint(api):
    client, engine, _ = api
    assert client.post("unload-checkpoint").status_code == 200 and len(engine.manager.cache) == 0
    assert client.post("reload-checkpoint").status_code == 200 and len(engine.manager.cache) == 1
    assert info_of(client.post("txt2img", {"prompt": "x", **SMALL}))["sd_model_name"] == "tiny-sd1"


def test_always_on_scripts_reach_extensions_and_unknown_titles_are_refused(api):
    client, _, _ = api
    refiner = {"Refiner": {"args": [True, "tiny-sdxl", 0.5]}}
    refused = client.post("txt2img", {"prompt": "x", "alwayson_scripts": {"No Such Script": {"args": []}}, **SMALL})
    assert refused.status_code == 422 and "No Such Script" in refused.json()["detail"]
    # the built-in Refiner script reaches the checkpoints extension: a refiner on an SD1 base is refused by it
    wrong = client.post("txt2img", {"prompt": "x", "alwayson_scripts": refiner, **SMALL})
    assert wrong.status_code == 422 and "refiner" in wrong.json()["detail"].lower()


def test_the_webuiapi_img2img_payload_inpaints(api):
    """What `webuiapi`'s `api.img2img(images=[...], mask_image=..., ...)` sends, field for field."""
    client, _, _ = api
    init = picture(64, seed=5)
    body = {
        "init_images": [b64_png(init)], "resize_mode": 0, "denoising_strength": 0.75, "image_cfg_scale": 1.5,
        "mask": b64_png(square_mask(64)), "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True,
        "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0, "initial_noise_multiplier": 1,
        "prompt": "a cube", "styles": [], "seed": 21, "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": 0,
        "seed_resize_from_w": 0, "sampler_name": "Euler a", "batch_size": 1, "n_iter": 1, "steps": 2,
        "cfg_scale": 7.0, "width": 64, "height": 64, "restore_faces": False, "tiling": False,
        "do_not_save_samples": False, "do_not_save_grid": False, "negative_prompt": "", "eta": 1.0, "s_churn": 0,
        "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "override_settings": {}, "override_settings_restore_afterwards": True,
        "script_args": [], "include_init_images": False, "script_name": None, "send_images": True,
        "save_images": False, "alwayson_scripts": {}, "sampler_index": "Euler a",
    }
    response = client.post("img2img", body)
    info = info_of(response)
    text = info["infotexts"][0]
    assert "Mask blur: 4" in text and "Masked content: fill" in text and "Inpaint area: Only masked" in text
    assert info["seed"] == 21 and info["easel_ignored"] == ["image_cfg_scale"]
    assert decode(response.json()["images"][0]).size == (64, 64)


def test_loras_are_listed_refreshed_and_applied_from_the_prompt(api):
    client, engine, _ = api
    listed = client.get("loras").json()
    assert [x["name"] for x in listed] == ["film"] and set(listed[0]) >= {"name", "alias", "path", "metadata"}
    base = client.post("txt2img", {"prompt": "a cube", "seed": 4, **SMALL}).json()["images"][0]
    with_lora = client.post("txt2img", {"prompt": "a cube <lora:film:1>", "seed": 4, **SMALL})
    info = info_of(with_lora)
    assert info["extra_generation_params"]["Lora hashes"].startswith("film: ")
    assert with_lora.json()["images"][0] != base  # the LoRA changed the picture
    (engine.manager.paths.folder("lora") / "film.safetensors").rename(engine.manager.paths.folder("lora") / "grain.safetensors")
    assert [x["name"] for x in client.get("loras").json()] == ["film"]  # listed from the cache until a refresh
    assert client.post("refresh-loras").status_code == 200
    assert [x["name"] for x in client.get("loras").json()] == ["grain"]
    missing = info_of(client.post("txt2img", {"prompt": "a cube <lora:film:1>", **SMALL}))
    assert any("film" in n and "not found" in n for n in missing["easel_notices"])
