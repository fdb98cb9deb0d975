"""The web UI in a real browser (Debian's chromium driven by Playwright) against a real `easel serve`
on tiny SD1 and SDXL checkpoints: what a user clicks, and what they would check.

Screenshots of each tab land in `test-artifacts/screenshots/`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.engine_helpers import picture
from tests.ui_server import ROOT, Server, data_dir_with
from webui.generation.infotext import image_bytes, read_infotext

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
LONG = int(os.environ.get("EASEL_UI_TIMEOUT_MS", 180_000))  # ms: generous for a loaded 2-core machine

STAMP_EXTENSION = '''
from webui import hookimpl
from webui.hooktypes import UISection


@hookimpl
def ui_section(tab, register):
    def build():
        import gradio as gr
        return {"label": gr.Textbox(label="Stamp", elem_id=f"stamp_label_{tab}")}
    register(UISection("stamp", "Stamp", build, open=True))


@hookimpl
def ui_top_bar(register):
    def build():
        import gradio as gr
        return {"flavour": gr.Dropdown(["plain", "spicy"], value="plain", label="Flavour", elem_id="stamp_flavour")}
    register(UISection("stamp_top", "Flavour", build))


@hookimpl
def infotext_params(request):
    label = (request.extensions.get("stamp") or {}).get("label")
    flavour = (request.extensions.get("stamp_top") or {}).get("flavour")
    return {"Stamp": label or None, "Flavour": flavour if flavour != "plain" else None}


@hookimpl
def infotext_pasted(params, request):
    if "Stamp" in params:
        request.extensions.setdefault("stamp", {})["label"] = params.pop("Stamp")
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with(tmp_path_factory.mktemp("ui-data"), {"tiny-sd1.safetensors": tiny_checkpoint("sd1"),
                                                              "tiny-sdxl.safetensors": tiny_checkpoint("sdxl-base")})
    (data / "extensions").mkdir()
    (data / "extensions" / "stamp.py").write_text(STAMP_EXTENSION)
    s = Server(data)
    s.data_dir = data
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("EASEL_SKIP_BROWSER") == "1":
            pytest.skip("EASEL_SKIP_BROWSER=1 and no chromium")
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (python launch.py --tests does it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("#txt2img_prompt textarea", timeout=LONG)
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def small_job(page, tab: str, steps: int = 2, size: int = 64, seed: int | None = None) -> None:
    set_number(page, f"{tab}_steps", steps)
    set_number(page, f"{tab}_width", size)
    set_number(page, f"{tab}_height", size)
    if seed is not None:
        page.locator(f"#{tab}_seed input").fill(str(seed))


def wait_result(page, tab: str) -> str:
    """The infotext of the finished job's first image; fails with the UI's message if the job did not run."""
    page.wait_for_selector(f"#{tab}_progress .easel-message.done, #{tab}_progress .easel-message.error", timeout=LONG)
    message = page.locator(f"#{tab}_progress .easel-message.error")
    assert message.count() == 0, message.inner_text()
    page.wait_for_selector(f"#{tab}_gallery img", timeout=LONG)
    return page.inner_text(f"#html_info_{tab}").strip()


def gallery_png(page, tab: str) -> Image.Image:
    src = page.locator(f"#{tab}_gallery img").first.get_attribute("src")
    body = page.request.get(src).body()
    path = ARTIFACTS.parent / f"{tab}-gallery.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return Image.open(path)


def upload(page, selector: str, path: Path, tries: int = 3) -> None:
    """Upload through the editor's own Upload button, as a user does; retried because the editor may
    re-mount while it starts."""
    for attempt in range(tries):
        with page.expect_file_chooser(timeout=LONG) as chooser:
            page.locator(f"{selector} button[aria-label=Upload]").click()
        chooser.value.set_files(str(path))
        try:
            page.wait_for_function(f"!document.querySelector('{selector}').innerText.includes('Upload an image')",
                                   timeout=15_000)
            return
        except Exception:
            if attempt == tries - 1:
                shot(page, "upload-failed")
                raise


def choose(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator("ul[role=listbox] li", has_text=text).first.click()


def test_txt2img_generate_shows_image_with_infotext(page, server):
    shot(page, "txt2img")
    page.fill("#txt2img_prompt textarea", "a red cube, (masterpiece:1.2)")
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.startsWith('5/75')")
    page.fill("#stamp_label_txt2img textarea, #stamp_label_txt2img input", "from-the-ui")
    choose(page, "stamp_flavour", "spicy")  # an extension's top-bar control (ui_top_bar)
    page.wait_for_function("document.querySelector('#easel_model_status').innerText.includes('tiny-sd1')",
                           timeout=LONG)
    small_job(page, "txt2img", steps=3, seed=1234)
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img")
    assert info.startswith("a red cube, (masterpiece:1.2)")
    for part in ("Steps: 3", "Seed: 1234", "Size: 64x64", "Model: tiny-sd1", "Stamp: from-the-ui", "Flavour: spicy"):
        assert part in info
    image = gallery_png(page, "txt2img")
    assert image.format == "PNG" and image.size == (64, 64)
    assert read_infotext(image) == info.strip()
    assert list((server.data_dir / "outputs" / "txt2img-images").rglob("*-1234.png"))
    page.click("#txt2img_reuse_seed")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '1234'")
    page.click("#txt2img_random_seed")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '-1'")


def test_send_result_to_img2img_and_inpaint(page):
    page.fill("#txt2img_prompt textarea", "send me on")
    small_job(page, "txt2img", steps=2, seed=99)
    page.click("#txt2img_generate")
    wait_result(page, "txt2img")
    page.click("#txt2img_send_to_img2img")
    page.wait_for_function("document.querySelector('#img2img_prompt textarea')?.value === 'send me on'", timeout=LONG)
    page.wait_for_selector("#img2img_image img", timeout=LONG)
    assert page.locator("#img2img_seed input").input_value() == "99"
    page.get_by_role("tab", name="txt2img", exact=True).first.click()
    page.click("#txt2img_send_to_inpaint")
    page.wait_for_function("document.querySelector('#img2maskimg') && !document.querySelector('#img2maskimg').innerText.includes('Upload an image')", timeout=LONG)
    page.wait_for_selector("#img2img_mask_blur", state="visible", timeout=LONG)  # inpaint options shown


def test_inpaint_a_painted_stroke(page, server, tmp_path):
    source = tmp_path / "source.png"
    picture(256, seed=5).save(source)
    page.get_by_role("tab", name="img2img", exact=True).first.click()
    page.get_by_role("tab", name="Inpaint", exact=True).click()
    page.wait_for_function("document.querySelector('#img2maskimg')?.innerText.includes('Upload an image')", timeout=LONG)
    upload(page, "#img2maskimg", source)
    page.wait_for_timeout(1000)  # the editor fits the image to the canvas
    page.locator("#img2maskimg button[aria-label=Brush]").click()
    canvas = page.locator("#img2maskimg canvas").first
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 41):
        page.mouse.move(x0 + box["width"] * 0.01 * i, y0)
        page.wait_for_timeout(20)
    page.mouse.up()
    page.wait_for_timeout(500)
    small_job(page, "img2img", steps=4, size=256, seed=7)
    shot(page, "inpaint")
    page.click("#img2img_generate")
    info = wait_result(page, "img2img")
    assert "Mask blur: 4" in info and "Denoising strength: 0.75" in info, info
    out = np.asarray(gallery_png(page, "img2img").convert("RGB")).astype(int)
    original = np.asarray(Image.open(source).convert("RGB")).astype(int)
    changed = np.abs(out - original).sum(axis=2) > 0
    assert changed[128, 120:160].all(), "the painted stroke was repainted"
    assert not changed[:12].any() and not changed[-12:].any(), "far from the stroke the image is untouched"


def test_png_info_sends_every_field_to_txt2img(page, tmp_path):
    infotext = ("a lighthouse at dusk\nNegative prompt: blurry\nSteps: 9, Sampler: Euler a, Schedule type: Karras, "
                "CFG scale: 4.5, Seed: 31337, Size: 96x128, Stamp: pasted-stamp, Version: v1.10.1")
    path = tmp_path / "a1111.png"
    path.write_bytes(image_bytes(picture(32), infotext, "png"))
    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(path))
    page.wait_for_function("document.querySelector('#pnginfo_html_info').innerText.includes('31337')", timeout=LONG)
    shot(page, "pnginfo")
    page.click("#pnginfo_send_to_txt2img")
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea')?.value === 'a lighthouse at dusk'",
                           timeout=LONG)
    value = lambda sel: page.locator(sel).first.input_value()  # noqa: E731
    assert value("#txt2img_neg_prompt textarea") == "blurry"
    assert value("#txt2img_steps input[type=number]") == "9"
    assert value("#txt2img_cfg_scale input[type=number]") == "4.5"
    assert value("#txt2img_seed input") == "31337"
    assert value("#txt2img_width input[type=number]") == "96"
    assert value("#txt2img_height input[type=number]") == "128"
    assert value("#txt2img_sampling input") == "Euler a"
    assert value("#txt2img_scheduler input") == "Karras"
    assert value("#stamp_label_txt2img textarea, #stamp_label_txt2img input") == "pasted-stamp"


def test_escape_interrupts_a_long_run(page):
    page.fill("#txt2img_prompt textarea", "a long run")
    small_job(page, "txt2img", steps=150, size=128)
    page.locator("#txt2img_prompt textarea").press("Control+Enter")  # A1111's shortcut
    page.wait_for_function("document.querySelector('#txt2img_progress').innerText.includes('Step')", timeout=LONG)
    page.wait_for_selector("#txt2img_live_preview img", state="visible", timeout=LONG)  # the live preview shows
    assert page.locator("#txt2img_gallery img").count() == 0  # in place of the previous job's images
    page.keyboard.press("Escape")
    info = wait_result(page, "txt2img")
    assert "Interrupted" in page.inner_text("#txt2img_progress")
    assert "Steps: 150" in info  # the image of an interrupted job keeps its request's infotext
    assert page.locator("#txt2img_live_preview").is_hidden()  # no empty preview box once the job is done


def test_switch_checkpoint_to_sdxl_and_generate(page):
    choose(page, "setting_sd_model_checkpoint", "tiny-sdxl")
    page.wait_for_function("document.querySelector('#easel_model_status').innerText.includes('tiny-sdxl')",
                           timeout=LONG)
    assert page.locator("#txt2img_width input[type=number]").input_value() == "1024"  # the family's size
    page.fill("#txt2img_prompt textarea", "an sdxl cube")
    small_job(page, "txt2img", steps=2, seed=5)
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img")
    assert "Model: tiny-sdxl" in info and "Size: 64x64" in info
    choose(page, "setting_sd_model_checkpoint", "tiny-sd1")
    page.wait_for_function("document.querySelector('#easel_model_status').innerText.includes('tiny-sd1')",
                           timeout=LONG)


def test_settings_and_extensions_tabs(page):
    page.get_by_role("tab", name="Settings").click()
    page.wait_for_selector("#setting_samples_format", timeout=LONG)
    shot(page, "settings")
    page.get_by_role("tab", name="Extensions").click()
    listed = page.inner_text("#extensions_list")
    assert "checkpoints" in listed and "stamp" in listed and "ui_top_bar" in listed
    shot(page, "extensions")


def test_phone_width_and_dark_theme(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("#txt2img_prompt textarea", timeout=LONG)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    dark = page.evaluate("document.body.classList.contains('dark') || document.querySelector('.dark') !== null")
    shot(page, "phone-dark")
    context.close()
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    assert dark, "the page did not follow the browser's dark preference"
