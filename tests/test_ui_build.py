"""Building the page (no server, no browser): A1111's element ids are there, extension tabs, sections
and top-bar controls appear through their hooks, and a broken one is reported without breaking the page."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

from tests.engine_helpers import make_engine
from webui import hookimpl
from webui.config import Config
from webui.core_settings import CORE_SETTINGS
from webui.generation.request import GenerationRequest
from webui.hooktypes import Setting, UISection, UITab
from webui.ui.blocks import build_blocks
from webui.ui.context import UIContext
from webui.ui.extensions_tab import extensions_html
from webui.ui.runner import GenerationRunner

A1111_IDS = [f"{tab}_{name}" for tab in ("txt2img", "img2img") for name in (
    "prompt", "neg_prompt", "generate", "interrupt", "skip", "gallery", "steps", "sampling", "scheduler",
    "cfg_scale", "width", "height", "seed", "batch_count", "batch_size", "token_counter", "random_seed",
    "reuse_seed", "res_switch_btn", "send_to_img2img", "send_to_inpaint")] + [
    "img2img_image", "img2maskimg", "img_inpaint_base", "img_inpaint_mask", "img2img_denoising_strength",
    "img2img_resize_mode", "img2img_mask_blur", "img2img_inpainting_fill", "img2img_inpaint_full_res",
    "img2img_inpaint_full_res_padding", "img2img_mask_mode", "setting_sd_model_checkpoint", "setting_sd_vae",
    "refresh_sd_model_checkpoint", "pnginfo_image", "pnginfo_send_to_txt2img", "settings_submit",
    "setting_samples_format", "setting_CLIP_stop_at_last_layers", "extensions_list", "tab_txt2img", "tab_img2img"]


class Contributes:
    """Every UI hook, one of each kind of failure included."""

    @hookimpl
    def ui_tabs(self, register, engine):
        def build():
            import gradio as gr
            gr.Markdown(f"{len(engine.manager.checkpoints())} checkpoint(s)", elem_id="contrib_tab_text")
        register(UITab("contrib", "Contrib", build))
        register(UITab("broken_tab", "Broken", lambda: 1 / 0))

    @hookimpl
    def ui_section(self, tab, register):
        def build():
            import gradio as gr
            return {"level": gr.Slider(0, 10, value=3, elem_id=f"contrib_level_{tab}")}
        register(UISection("contrib", "Contrib", build))
        if tab == "txt2img":
            register(UISection("broken_section", "Broken", lambda: {}["missing"]))

    @hookimpl
    def ui_top_bar(self, register):
        def build():
            import gradio as gr
            return {"mood": gr.Dropdown(["calm", "loud"], value="calm", elem_id="contrib_mood")}
        register(UISection("contrib_top", "Mood", build))

    @hookimpl
    def register_settings(self, register):
        register(Setting("contrib_strength", 0.5, "Contrib strength", section="Contrib", minimum=0, maximum=1))


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("ui-build")
    engine = make_engine(folder / "data", {"tiny-sd1.safetensors": tiny_checkpoint("sd1")})
    engine.plugins.register(Contributes(), "contrib")
    config = Config(folder / "config.json", [*CORE_SETTINGS, *engine.plugins.settings()])
    ctx = UIContext(engine, engine.plugins, config, GenerationRunner(engine, folder))
    blocks = build_blocks(ctx)
    ids = {c.get("props", {}).get("elem_id") for c in blocks.config["components"]}
    yield ctx, blocks, ids
    engine.plugins.unregister("contrib")


def test_the_page_has_a1111_element_ids(built):
    _, _, ids = built
    assert [i for i in A1111_IDS if i not in ids] == []


def test_extension_ui_appears_through_the_hooks(built):
    _, blocks, ids = built
    assert {"contrib_tab_text", "contrib_level_txt2img", "contrib_level_img2img", "contrib_mood",
            "setting_contrib_strength", "tab_contrib"} <= ids
    assert "contrib_level_inpaint" not in ids  # registered for img2img and inpaint: shown once, in img2img
    text = next(c for c in blocks.config["components"] if c.get("props", {}).get("elem_id") == "contrib_tab_text")
    assert text["props"]["value"] == "1 checkpoint(s)"  # the tab saw the engine it was given


def test_broken_ui_is_reported_and_the_rest_is_built(built):
    ctx, _, ids = built
    listed = [c for c in built[1].config["components"] if c.get("props", {}).get("elem_id") == "extensions_list"]
    page = listed[0]["props"]["value"]
    assert "extension tab &#x27;broken_tab&#x27; failed to build: ZeroDivisionError" in page
    assert "extension section &#x27;broken_section&#x27; failed to build: KeyError" in page
    assert "txt2img_generate" in ids and "tab_broken_tab" in ids


def test_load_failures_are_listed(built, tmp_path):
    from webui.plugins import Plugins

    ctx, _, _ = built
    (tmp_path / "exploding.py").write_text("raise RuntimeError('boom at import')\n")
    plugins = Plugins().load(folder=tmp_path)
    page = extensions_html(UIContext(ctx.engine, plugins, ctx.config, ctx.runner), [])
    assert "exploding (folder): RuntimeError: boom at import" in page and "checkpoints" in page


def test_gradios_queue_is_told_to_poll_less_often(built):
    """`calm_queue` sets two attributes Gradio has no option for; this fails when a Gradio release renames
    them, so the change is seen instead of the idle server quietly using 4% of a core again."""
    from webui.server import QUEUE_POLL_SECONDS, calm_queue

    _, blocks, _ = built
    calm_queue(blocks)
    assert blocks._queue.sleep_when_free == QUEUE_POLL_SECONDS
    assert blocks._queue.progress_update_sleep_when_free == 0.1


@contextmanager
def slow_hook(engine, hook: str, seconds: float):
    """`engine` with an extension whose `hook` takes `seconds` (a slow step, a slow start)."""
    def impl():
        time.sleep(seconds)

    engine.plugins.register(type("Slow", (), {hook: staticmethod(hookimpl(impl))})(), f"slow-{hook}")
    try:
        yield
    finally:
        engine.plugins.unregister(f"slow-{hook}")


def test_running_jobs_update_the_page_once_per_refresh_period(built):
    """A1111's `live_preview_refresh_period`: steps in between are merged into the next update."""
    ctx, _, _ = built
    request = GenerationRequest(prompt="a cube", steps=6, width=64, height=64, seed=1)
    counts = {}
    with slow_hook(ctx.engine, "step_end", 0.15):
        for period in (5000, 100):
            ctx.config.update({"live_preview_refresh_period": period})
            updates = list(GenerationRunner(ctx.engine, ctx.runner.temp_dir, ctx.config).stream(request, "s"))
            assert updates[-1].done and updates[-1].images
            counts[period] = len([u for u in updates if "Step" in u.progress])  # not "Starting…" (a cold start)
    assert counts[5000] == 1  # the first step at once, then nothing more until the job is done
    assert counts[100] >= 4  # 6 steps of 150 ms: nearly every step shown


def test_starting_shows_only_while_a_job_has_not_reached_its_first_step(built):
    """A warm job's first update is its first step (no update spent on "Starting…"); a job that is slow to
    start, such as one that loads its model first (here a `before_generate` hook that takes 0.8 s), says
    "Starting…" meanwhile."""
    ctx, _, _ = built
    request = GenerationRequest(prompt="a cube", steps=2, width=64, height=64, seed=1)
    runner = GenerationRunner(ctx.engine, ctx.runner.temp_dir, ctx.config)
    list(runner.stream(request, "s"))  # warm
    first = [u.progress for u in runner.stream(request, "s")]
    with slow_hook(ctx.engine, "before_generate", 0.8):
        slow = [u.progress for u in runner.stream(request, "s")]
    assert "Step 1/2" in first[0] and not any("Starting" in p for p in first), first
    assert "Starting" in slow[0] and "Step 1/2" in slow[1], slow
