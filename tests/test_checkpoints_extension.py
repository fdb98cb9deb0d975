"""The built-in `checkpoints` extension on real tiny checkpoints, through the engine like a user:
the model and VAE chosen per request (switching families in one process gives what a fresh process
gives), family and Turbo/Lightning defaults, the SDXL refiner as a latent continuation (checked
against a hand-written diffusers run) and the infotext keys it writes and reads back."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from engine_helpers import picture, pixels
from webui import hookimpl
from webui.generation.engine import Engine, EngineOptions
from webui.generation.params import request_from_infotext
from webui.generation.progress import JobControl
from webui.generation.prompt_encoding import encode_prompts
from webui.generation.request import GenerationRequest, Mode
from webui.generation.samplers import build_scheduler, find_sampler
from webui.generation.seeds import image_noise
from webui.models.convert.vae import vae_to_ldm
from webui.models.manager import ModelManager
from webui.models.tiny import tiny_pipeline
from webui.models.vae import decode
from webui.plugins import Plugins
from webui.settings import Paths

BASE, REFINER = "tiny-sdxl-base", "tiny-sdxl-refiner"
REFINE = {"checkpoints": {"refiner": REFINER, "switch_at": 0.6}}


@pytest.fixture(scope="module")
def data(tiny_checkpoint, tmp_path_factory) -> Paths:
    """A data dir with tiny SD1, SDXL base and SDXL refiner checkpoints and one external VAE."""
    paths = Paths.from_flags(data_dir=tmp_path_factory.mktemp("checkpoints-ext"))
    for kind in ("checkpoints", "vae"):
        paths.folder(kind).mkdir(parents=True)
    for family in ("sd1", "sdxl-base", "sdxl-refiner"):
        (paths.folder("checkpoints") / f"tiny-{family}.safetensors").symlink_to(tiny_checkpoint(family))
    vae = tiny_pipeline("sd1", seed=7).vae  # same layout as the checkpoint's own, other weights
    save_file(vae_to_ldm({k: v.contiguous() for k, v in vae.state_dict().items()}, vae.config),
              str(paths.folder("vae") / "other.safetensors"))
    return paths


def new_engine(paths: Paths) -> Engine:
    plugins = Plugins.builtin()
    return Engine(ModelManager(paths, plugins=plugins), EngineOptions(save_images=False), plugins)


@pytest.fixture(scope="module")
def engine(data) -> Engine:
    return new_engine(data)


def sha10(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def model_file(paths: Paths, name: str):
    return paths.folder("checkpoints") / f"{name}.safetensors"


def request(checkpoint: str | None = "tiny-sd1", **kw) -> GenerationRequest:
    base = dict(prompt="a red cube", negative_prompt="blurry", checkpoint=checkpoint, steps=2, width=64, height=64,
                seed=7, sampler="Euler")
    base.update(kw)
    return GenerationRequest(**base)


def settings_line(result) -> dict[str, str]:
    return dict(pair.split(": ", 1) for pair in result.infotexts[0].splitlines()[-1].split(", "))


# ---- which model ------------------------------------------------------------------------------


def test_switching_sd1_sdxl_sd1_in_one_engine_gives_what_a_fresh_engine_gives(engine, data):
    sd1, xl = sha10(model_file(data, "tiny-sd1")), sha10(model_file(data, BASE))
    fresh = {name: new_engine(data).generate(request(name)) for name in ("tiny-sd1", BASE)}  # one model each
    jobs = [  # (request, model it must run), alternating families
        (request("tiny-sd1"), "tiny-sd1"),  # by name
        (request(f"{BASE}.safetensors [{xl}]"), BASE),  # by title
        (request(sd1), "tiny-sd1"),  # by hash
        (request("tiny-sd1", override_settings={"sd_model_checkpoint": BASE}), BASE),  # A1111's override wins
        (request(None, override_settings={"sd_model_checkpoint": "tiny-sd1.safetensors"}), "tiny-sd1"),
    ]
    pipelines: dict = {}
    for req, name in jobs:
        result = engine.generate(req)
        assert result.model.entry.model_name == name
        assert result.model.pipeline is pipelines.setdefault(name, result.model.pipeline)  # switching back: cached
        assert result.images[0].image.size == (64, 64)
        assert np.array_equal(pixels(result.images[0].image), pixels(fresh[name].images[0].image)), req
        params = settings_line(result)
        assert params["Model"] == name
        assert params["Model hash"] == (sd1 if name == "tiny-sd1" else xl)
        assert result.infotexts == fresh[name].infotexts


def test_a_hash_nobody_computed_yet_is_found_by_hashing_pending_files(paths, tiny_checkpoint):
    """A1111 finds only hashes it has computed; a pasted infotext or an API client naming a hash must
    not depend on that, so the extension hashes the pending files once on a miss."""
    (paths.folder("checkpoints") / "model.safetensors").symlink_to(tiny_checkpoint("sd1"))
    plugins = Plugins.builtin()
    manager = ModelManager(paths, plugins=plugins)
    assert manager.checkpoints()[0].sha256 is None
    loaded = plugins.first("select_model", request=request(sha10(tiny_checkpoint("sd1"))), manager=manager)
    assert loaded.entry.name == "model.safetensors"
    with pytest.raises(LookupError, match="no checkpoint named '0123456789'"):
        plugins.first("select_model", request=request("0123456789"), manager=manager)


# ---- defaults ---------------------------------------------------------------------------------


def defaults(plugins: Plugins, model) -> dict:
    """Merged as the engine merges them (the extension called first wins)."""
    merged: dict = {}
    for _, d in reversed(plugins.call_each("model_defaults", model=model)):
        merged.update(d)
    return merged


def test_unset_size_is_the_family_size(engine):
    """The engine takes width/height from `model_defaults`. A 1024x1024 denoise of even the tiny SDXL
    takes ~20 s on CPU (the VAE decode at full size), so the jobs are interrupted before their first
    step: the validated request the result carries still shows the size the job would have run at."""
    for name, size in (("tiny-sd1", 512), (BASE, 1024), (REFINER, 1024)):
        control = JobControl()
        control.interrupt()
        result = engine.generate(request(name, width=None, height=None), control=control)
        assert (result.request.width, result.request.height) == (size, size), name
        assert result.images == [] and result.interrupted
        assert defaults(engine.plugins, result.model) == {"width": size, "height": size}


def test_turbo_and_lightning_variants_get_few_step_defaults(paths, tiny_checkpoint):
    folder = paths.folder("checkpoints")
    for name in ("plain-xl", "my-sdxl-turbo", "fast-xl"):
        (folder / f"{name}.safetensors").symlink_to(tiny_checkpoint("sdxl-base"))
    (folder / "fast-xl.json").write_text(json.dumps({"variant": "lightning"}))  # README "Override a guess"
    plugins = Plugins.builtin()
    manager = ModelManager(paths, plugins=plugins)
    expected = {
        "plain-xl": {"width": 1024, "height": 1024},
        "my-sdxl-turbo": {"width": 1024, "height": 1024, "steps": 1, "cfg_scale": 1.0, "sampler": "Euler a",
                          "schedule_type": "Automatic"},
        "fast-xl": {"width": 1024, "height": 1024, "steps": 4, "cfg_scale": 1.0, "sampler": "Euler",
                    "schedule_type": "SGM Uniform"},
    }
    for name, want in expected.items():
        loaded = manager.load(name)
        got = defaults(plugins, loaded)
        assert got == want, name
        if "sampler" in got:  # the defaults are a pair the sampler table accepts, not just names
            find_sampler(got["sampler"])
            build_scheduler(loaded.pipeline.scheduler.config, got["sampler"], got["schedule_type"], steps=got["steps"])


# ---- SDXL refiner -----------------------------------------------------------------------------


def test_refiner_continues_the_base_latents_exactly_like_diffusers_and_pastes_back(engine):
    seed, steps, switch, cfg = 21, 4, 0.6, 7.0
    req = request(BASE, seed=seed, steps=steps, sampler="Euler a", cfg_scale=cfg, extensions=REFINE)
    result = engine.generate(req)
    base_only = engine.generate(replace(req, extensions={}))

    # by hand: the same weights (same manager), embeddings, initial noise, generators and schedulers
    base, refiner = engine.manager.load(BASE), engine.manager.load(REFINER)
    pipe = StableDiffusionXLPipeline.from_pipe(base.pipeline, scheduler=build_scheduler(
        base.pipeline.scheduler.config, "Euler a", "Automatic", seed=[seed], steps=steps))
    cond = encode_prompts(pipe, [req.prompt], [req.negative_prompt], 1)
    noise, generator = image_noise((4, 8, 8), seed)
    latents = pipe(prompt_embeds=cond.prompt_embeds, negative_prompt_embeds=cond.negative_prompt_embeds,
                   pooled_prompt_embeds=cond.pooled_prompt_embeds,
                   negative_pooled_prompt_embeds=cond.negative_pooled_prompt_embeds,
                   latents=noise[None].to(cond.prompt_embeds.dtype), generator=[generator], num_inference_steps=steps,
                   guidance_scale=cfg, height=64, width=64, denoising_end=switch, output_type="latent").images
    rpipe = StableDiffusionXLImg2ImgPipeline.from_pipe(refiner.pipeline, scheduler=build_scheduler(
        refiner.pipeline.scheduler.config, "Euler a", "Automatic", seed=[seed], steps=steps))
    rcond = encode_prompts(rpipe, [req.prompt], [req.negative_prompt], 1)
    latents = rpipe(image=latents, denoising_start=switch, num_inference_steps=steps, guidance_scale=cfg,
                    prompt_embeds=rcond.prompt_embeds, negative_prompt_embeds=rcond.negative_prompt_embeds,
                    pooled_prompt_embeds=rcond.pooled_prompt_embeds,
                    negative_pooled_prompt_embeds=rcond.negative_pooled_prompt_embeds,
                    generator=[torch.Generator("cpu").manual_seed(seed)], output_type="latent").images
    decoded = decode(base.pipeline.vae, latents)  # the engine decodes with the job's (base) model's VAE
    by_hand = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()[0]

    assert np.array_equal(np.asarray(result.images[0].image), by_hand)
    assert not np.array_equal(pixels(result.images[0].image), pixels(base_only.images[0].image))
    params = settings_line(result)
    assert params["Refiner"] == f"{REFINER} [{sha10(model_file(engine.manager.paths, REFINER))}]"
    assert params["Refiner switch at"] == "0.6"
    assert params["Model"] == BASE and "Refiner" not in settings_line(base_only)

    pasted = request_from_infotext(result.infotexts[0], engine.plugins)  # PNG Info -> "Send to txt2img"
    assert pasted.request.checkpoint == BASE
    assert pasted.request.extensions["checkpoints"] == {"refiner": REFINER, "switch_at": 0.6}
    assert pasted.unknown == {}
    again = engine.generate(pasted.request)
    assert np.array_equal(pixels(again.images[0].image), pixels(result.images[0].image))


@pytest.mark.parametrize("checkpoint, options, message", [
    ("tiny-sd1", {"refiner": REFINER}, "'tiny-sd1' is sd1: choose an SDXL checkpoint or remove the refiner"),
    (BASE, {"refiner": "tiny-sd1"}, "refiner 'tiny-sd1.safetensors' is sd1: a refiner must be an SDXL model"),
    (BASE, {"refiner": "no-such-refiner"}, "no checkpoint named 'no-such-refiner'"),
    (BASE, {"refiner": REFINER, "switch_at": 0}, "between 0 and 1 .exclusive., got 0"),
    (BASE, {"refiner": REFINER, "switch_at": 1.0}, "between 0 and 1 .exclusive., got 1.0"),
    (BASE, {"refiner": REFINER, "switch_at": -0.5}, "got -0.5"),
    (BASE, {"refiner": REFINER, "switch_at": math.nan}, "got nan"),
    (BASE, {"refiner": REFINER, "switch_at": "late"}, "must be a number between 0 and 1 .exclusive., got 'late'"),
], ids=["sd1-base", "sd1-refiner", "missing", "zero", "one", "negative", "nan", "text"])
def test_unusable_refiner_options_are_refused_before_any_step(engine, checkpoint, options, message):
    steps: list[int] = []
    with pytest.raises((ValueError, LookupError), match=message):
        engine.generate(request(checkpoint, extensions={"checkpoints": options}),
                        listener=lambda event: steps.append(event.step))
    assert steps == []  # refused up front: no base run wasted


class InterruptAtStep:
    """A test extension that presses Interrupt when the job reaches a step."""

    def __init__(self, control: JobControl, step: int):
        self.control, self.step = control, step

    @hookimpl
    def step_end(self, state):
        if state.step == self.step:
            self.control.interrupt()


def test_the_refiners_steps_count_on_in_the_progress_and_interrupt_stops_them(engine):
    req = request(BASE, seed=5, steps=6, sampler="Euler", extensions={"checkpoints": {"refiner": REFINER,
                                                                                      "switch_at": 0.5}})
    events = []
    full = engine.generate(req, events.append)
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]  # 3 base steps, then the refiner's 3
    assert events[-1].steps == 6 and events[-1].job_step == events[-1].job_steps == 6

    control, events = JobControl(), []
    engine.plugins.register(InterruptAtStep(control, 4), "interrupt-at-4")
    try:
        stopped = engine.generate(req, events.append, control)
    finally:
        engine.plugins.unregister("interrupt-at-4")
    assert stopped.interrupted and [e.step for e in events] == [1, 2, 3, 4]  # stopped in the refiner's first step
    assert len(stopped.images) == 1 and not np.array_equal(pixels(stopped.images[0].image),
                                                           pixels(full.images[0].image))


def test_the_refiner_alone_runs_img2img(engine):
    req = request(REFINER, mode=Mode.IMG2IMG, init_image=picture(), denoising_strength=0.5, steps=4)
    result = engine.generate(req)
    image = result.images[0].image
    assert image.size == (64, 64)
    assert not np.array_equal(pixels(image), pixels(picture()))
    params = settings_line(result)
    assert params["Model"] == REFINER and params["Denoising strength"] == "0.5"


# ---- VAE --------------------------------------------------------------------------------------


def test_vae_per_request_changes_pixels_and_is_recorded(engine, data):
    vae_file = data.folder("vae") / "other.safetensors"
    own = engine.generate(request())
    chosen = engine.generate(request(extensions={"checkpoints": {"vae": "other.safetensors"}}))
    overridden = engine.generate(request(override_settings={"sd_vae": "other.safetensors"},
                                         extensions={"checkpoints": {"vae": "None"}}))  # A1111's key wins
    none = engine.generate(request(extensions={"checkpoints": {"vae": "None"}}))
    automatic = engine.generate(request(extensions={"checkpoints": {"vae": "Automatic"}}))

    assert not np.array_equal(pixels(chosen.images[0].image), pixels(own.images[0].image))
    assert np.array_equal(pixels(overridden.images[0].image), pixels(chosen.images[0].image))
    for back in (none, automatic):  # the checkpoint's own VAE is put back
        assert np.array_equal(pixels(back.images[0].image), pixels(own.images[0].image))
    params = settings_line(chosen)
    assert params["VAE"] == "other.safetensors" and params["VAE hash"] == sha10(vae_file)
    assert "VAE" not in settings_line(own) and "VAE hash" not in settings_line(none)
    pasted = request_from_infotext(chosen.infotexts[0], engine.plugins).request
    assert pasted.extensions["checkpoints"] == {"vae": "other.safetensors"}


def test_a_refiner_loaded_during_a_job_does_not_evict_the_jobs_base_model(data):
    """With a RAM budget that holds one model, the refiner's load must not unload the base mid-job."""
    from webui import hookimpl
    from webui.settings import RuntimeSettings

    events: list[tuple[str, str]] = []

    class Watch:
        @hookimpl
        def model_loaded(self, model):
            events.append(("loaded", model.entry.name))

        @hookimpl
        def model_unloaded(self, model):
            events.append(("unloaded", model.entry.name))

    plugins = Plugins.builtin()
    plugins.register(Watch(), "watch")
    manager = ModelManager(data, RuntimeSettings(ram_budget=1), plugins=plugins)
    engine = Engine(manager, EngineOptions(save_images=False), plugins)
    engine.generate(request(BASE, steps=4, extensions=REFINE))
    assert events == [("loaded", f"{BASE}.safetensors"), ("loaded", f"{REFINER}.safetensors")]
    events.clear()
    engine.generate(request(BASE, steps=4, extensions=REFINE))  # the base was kept: no reload
    assert ("loaded", f"{BASE}.safetensors") not in events
