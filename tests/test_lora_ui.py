"""The LoRA section in a real browser against a real `easel serve` (tiny SD1, two LoRA files, one with a
preview): the cards and slots list the files, a card click tags the prompt of its own tab, and the
generated image's infotext names what the prompt tags and the slots applied."""

from __future__ import annotations

import shutil

import pytest
import torch

from extensions.lora.library import lora_hash
from tests import lora_files as lf
from tests.engine_helpers import picture
# browser and page come from the UI tests (page opens this module's server)
from tests.test_ui_browser import LONG, browser, choose, page, set_number, shot, small_job, wait_result  # noqa: F401
from tests.ui_server import Server, data_dir_with
from webui.models.tiny import tiny_pipeline

SOFT = "soft & fuzzy"  # a space and an HTML character: file names are user data


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    data = data_dir_with(tmp_path_factory.mktemp("lora-ui"), {"tiny-sd1.safetensors": tiny_checkpoint("sd1")})
    pipe = tiny_pipeline("sd1", seed=0)  # the checkpoint's layout
    folder = data / "models" / "Lora"
    s_ink = lf.write(folder, "ink", lf.kohya(pipe, "ldm", seed=1))
    s_soft = lf.write(folder, SOFT, lf.kohya(pipe, "diffusers", seed=2))
    picture(256, seed=3).save(folder / "ink.png")
    s = Server(data)
    s.folder = folder
    s.hashes = {"ink": lora_hash(s_ink)[:12], SOFT: lora_hash(s_soft)[:12]}
    yield s
    assert s.stop() == 0


def open_section(page, tab: str) -> None:
    page.click(f"#{tab}_lora_section > .label-wrap")
    page.click(f"#{tab}_lora_browser > .label-wrap")  # the cards are made when the browser opens
    page.wait_for_selector(f"#{tab}_lora_cards .easel-lora-card", timeout=LONG)


def card(page, tab: str, name: str):
    return page.locator(f"#{tab}_lora_cards .easel-lora-card", has_text=name)


def prompt(page, tab: str) -> str:
    return page.locator(f"#{tab}_prompt textarea").input_value()


def test_cards_show_the_files_and_a_click_tags_the_prompt_of_its_tab(page, server):
    page.fill("#txt2img_prompt textarea", "a cube")
    open_section(page, "txt2img")
    assert card(page, "txt2img", "ink").locator("img").get_attribute("src").startswith("data:image/jpeg;base64,")
    assert card(page, "txt2img", SOFT).locator("img").count() == 0  # no preview beside it
    assert "format: kohya-ldm" in card(page, "txt2img", "ink").get_attribute("title")
    page.fill("#txt2img_lora_cards .easel-lora-search", "FUZZ")
    assert not card(page, "txt2img", "ink").is_visible() and card(page, "txt2img", SOFT).is_visible()
    page.fill("#txt2img_lora_cards .easel-lora-search", "")
    card(page, "txt2img", "ink").click()
    assert prompt(page, "txt2img") == "a cube <lora:ink:1>"
    card(page, "txt2img", "ink").click()  # again: removed, as in A1111
    assert prompt(page, "txt2img") == "a cube"
    card(page, "txt2img", "ink").click()
    shot(page, "lora-section")

    page.get_by_role("tab", name="img2img", exact=True).first.click()  # each tab's cards edit its own prompt
    page.wait_for_selector("#img2img_prompt textarea", timeout=LONG)
    open_section(page, "img2img")
    card(page, "img2img", SOFT).click()
    assert prompt(page, "img2img") == f"<lora:{SOFT}:1>"
    page.get_by_role("tab", name="txt2img", exact=True).first.click()
    assert prompt(page, "txt2img") == "a cube <lora:ink:1>"

    small_job(page, "txt2img", seed=11)
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img")
    assert info.startswith("a cube <lora:ink:1>")
    assert f'Lora hashes: "ink: {server.hashes["ink"]}"' in info


def test_a_slot_adds_a_lora_with_its_weight_and_refresh_finds_new_files(page, server):
    page.fill("#txt2img_prompt textarea", "a cube <lora:ink:1>")
    open_section(page, "txt2img")
    assert not page.locator("#txt2img_lora_1").is_visible()
    page.click("#txt2img_lora_add")
    page.wait_for_selector("#txt2img_lora_1", state="visible", timeout=LONG)
    page.locator("#txt2img_lora_1 input").click()
    listed = page.locator("ul[role=listbox] li").all_inner_texts()
    assert {"ink · sd1", f"{SOFT} · sd1"} <= {t.strip() for t in listed}
    page.locator("ul[role=listbox] li", has_text=SOFT).first.click()
    set_number(page, "txt2img_lora_weight_1", 0.5)
    small_job(page, "txt2img", seed=11)
    page.click("#txt2img_generate")
    info = wait_result(page, "txt2img")
    assert f'Lora hashes: "ink: {server.hashes["ink"]}, {SOFT}: {server.hashes[SOFT]}"' in info, info

    page.click("#txt2img_lora_remove_1")  # removed: hidden and emptied
    page.wait_for_selector("#txt2img_lora_1", state="hidden", timeout=LONG)
    page.click("#txt2img_lora_add")
    page.wait_for_selector("#txt2img_lora_1", state="visible", timeout=LONG)
    assert page.locator("#txt2img_lora_1 input").input_value() == ""

    shutil.copy(server.folder / "ink.safetensors", server.folder / "late.safetensors")
    page.click("#txt2img_lora_refresh")
    card(page, "txt2img", "late").wait_for(timeout=LONG)
    choose(page, "txt2img_lora_1", "late · sd1")


def test_cards_escape_file_names_and_carry_a_name_the_tag_resolves(tmp_path):
    from extensions.lora.library import LoraLibrary
    from extensions.lora.ui import card_html, slot_choices, tag_name

    folder = tmp_path / "Lora"
    tensors = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 8, 1, 1),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 2, 1, 1)}
    lf.write(folder, '<img src=x onerror="alert(1)">', tensors, {"ss_output_name": "safe alias"})
    lf.write(folder, "colon: name", tensors)
    library = LoraLibrary((folder,), tmp_path / "cache.json")
    by_name = {e.name: e for e in library.entries()}
    html = "".join(card_html(library, e) for e in by_name.values())
    assert "<img src=x" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert tag_name(library, by_name['<img src=x onerror="alert(1)">']) == "safe alias"  # '<' cannot be in a tag
    colon = by_name["colon: name"]
    assert tag_name(library, colon) == colon.hash12 and library.find(colon.hash12) is colon  # ':' neither
    assert ("colon: name · sd1", "colon: name") in slot_choices(library)
