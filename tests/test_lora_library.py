"""The LoRA library (what `GET /sdapi/v1/loras` and the extra-networks browser list) and the infotext:
header-only listing cached across starts, names/aliases/previews/metadata as A1111 gives them, the A1111
LoRA hash, pickles refused unopened, and an infotext that survives the round trip through a PNG."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lora_files as lf
from engine_helpers import make_engine, pixels
from test_lora import Trap
from webui.generation.infotext import read_infotext
from webui.generation.params import request_from_infotext
from webui.generation.request import GenerationRequest
from webui.models.manager import ModelManager
from webui.models.tiny import tiny_pipeline
from webui.plugins import Plugins
from webui.settings import Paths

SMALL = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 8, 1, 1),
         "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 2, 1, 1)}


def listing(paths: Paths):
    """What a fresh start lists, through the registered extra network (the API's and browser's way)."""
    manager = ModelManager(paths)
    network = Plugins.builtin().extra_networks()["lora"]
    return network.items(manager), manager


def reads(manager) -> int:
    from extensions.lora.library import library_for

    return library_for(manager).header_reads


def test_lora_and_lyco_tags_and_the_fuse_setting_are_registered():
    plugins = Plugins.builtin()
    networks = plugins.extra_networks()
    assert networks["lora"].title == "LoRA" and networks["lora"].items and networks["lora"].refresh
    assert "lyco" in networks and networks["lyco"].items is None  # an alias tag; the files are listed once
    assert any(s.key == "lora_fuse" and s.default is False for s in plugins.settings())


def test_a_thousand_files_list_from_headers_once_then_from_the_cache(tmp_path):
    paths = Paths.from_flags(data_dir=tmp_path)
    for i in range(1000):
        lf.write(paths.folder("lora") / f"group{i % 10}", f"lora_{i:04d}", SMALL, {"ss_output_name": f"alias{i}"})
    items, manager = listing(paths)
    assert len(items) == 1000 and reads(manager) == 1000
    assert {"name": "group3/lora_0003", "alias": "alias3"}.items() <= next(
        i for i in items if i["name"] == "group3/lora_0003").items()

    again, manager = listing(paths)  # the next start: nothing is read but the cache
    assert again == items and reads(manager) == 0
    changed = paths.folder("lora") / "group5" / "lora_0005.safetensors"
    lf.write(changed.parent, "lora_0005", SMALL, {"ss_output_name": "renamed"})
    os.utime(changed, ns=(1, 1))  # a new mtime even on a coarse clock
    (paths.folder("lora") / "group7" / "lora_0007.safetensors").unlink()
    network = Plugins.builtin().extra_networks()["lora"]
    network.refresh(manager)
    after = {i["name"]: i for i in network.items(manager)}
    assert reads(manager) == 1 and len(after) == 999 and after["group5/lora_0005"]["alias"] == "renamed"


def test_entries_carry_a1111s_fields_and_what_easel_knows(tmp_path):
    paths = Paths.from_flags(data_dir=tmp_path)
    folder = paths.folder("lora")
    sd1, sdxl = tiny_pipeline("sd1"), tiny_pipeline("sdxl-base")
    lf.write(folder, "style", lf.kohya(sd1, "ldm", rank=8), {"ss_output_name": "MyStyle", "ss_network_dim": "8",
                                                              "ss_tag_frequency": json.dumps({"a": {"cat": 3}})})
    lf.write(folder / "xl", "detail", lf.lycoris(sdxl, "lokr"))
    Image.new("RGB", (8, 8)).save(folder / "style.png")
    Image.new("RGB", (8, 8)).save(folder / "xl" / "detail.preview.jpg")
    (folder / "old.ckpt").write_bytes(b"not even opened")
    items = {i["name"]: i for i in listing(paths)[0]}
    style, detail, old = items["style"], items["xl/detail"], items["old"]
    assert set(style) >= {"name", "alias", "path", "metadata"}
    assert (style["alias"], style["family"], style["format"], style["rank"]) == ("MyStyle", "sd1", "kohya-ldm", 8)
    assert style["metadata"]["ss_tag_frequency"] == {"a": {"cat": 3}} and style["metadata"]["ss_network_dim"] == "8"
    assert style["preview"] == str(folder / "style.png") and style["hash"] is None and style["error"] is None
    assert (detail["family"], detail["format"], detail["alias"]) == ("sdxl", "lokr", "detail")
    assert detail["preview"] == str(folder / "xl" / "detail.preview.jpg")
    assert old["format"] == "pickle" and "refused" in old["error"]


def test_the_hash_is_a1111s_lora_hash_and_is_cached(tmp_path):
    paths = Paths.from_flags(data_dir=tmp_path)
    path = lf.write(paths.folder("lora"), "a", lf.kohya(tiny_pipeline("sd1"), "ldm"), {"ss_output_name": "x"})
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    expected = hashlib.sha256(data[8 + n:]).hexdigest()  # A1111's "addnet" hash: everything after the header
    from extensions.lora.library import library_for

    manager = ModelManager(paths)
    library = library_for(manager)
    assert library.with_hash(library.find("a")) == expected
    assert library.find(expected[:12]).path == path  # a known hash finds the file
    items, fresh = listing(paths)
    assert items[0]["hash"] == expected[:12] and reads(fresh) == 0


@pytest.mark.parametrize("shapes, family", [
    ({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (4, 768)}, "sd1"),
    ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (4, 1024)}, "sd2"),
    ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (4, 2048)}, "sdxl"),
    ({"lora_te_text_model_encoder_layers_0_self_attn_q_proj": (4, 1024)}, "sd2"),
    ({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (4, 768)}, "sdxl"),
    ({"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": (4, 320)}, "sd1/sd2"),
    ({"lora_unet_input_blocks_1_1_proj_in": (4, 320, 1, 1)}, "sd1"),
    ({"lora_unet_mid_block_attentions_0_proj_out": (4, 1280)}, "unknown"),
])
def test_the_family_comes_from_the_layout_and_real_widths(shapes, family):
    from extensions.lora.layout import describe

    header = {f"{k}.lora_down.weight": v for k, v in shapes.items()}
    header.update({f"{k}.lora_up.weight": (v[1], 4) for k, v in shapes.items()})
    assert describe(header).family == family


@pytest.fixture(scope="module")
def saving(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-out")
    engine = make_engine(tmp_path_factory.mktemp("lora-info"), {"tiny.safetensors": tiny_checkpoint("sd1")},
                         outdir=out)
    lf.write(engine.manager.paths.folder("lora"), "a", lf.kohya(tiny_pipeline("sd1"), "ldm", seed=1))
    return engine


def test_the_infotext_round_trip_restores_tags_and_hashes(saving):
    result = saving.generate(GenerationRequest(prompt="a cube <lora:a:0.7>", steps=2, width=64, height=64, seed=3))
    text = read_infotext(Image.open(result.images[0].path))
    data = (saving.manager.paths.folder("lora") / "a.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    digest = hashlib.sha256(data[8 + n:]).hexdigest()[:12]
    assert f'Lora hashes: "a: {digest}"' in text
    pasted = request_from_infotext(text, saving.plugins, saving.manager)
    assert pasted.request.prompt == "a cube <lora:a:0.7>" and "Lora hashes" not in pasted.unknown
    assert pasted.notices == []
    again = saving.generate(pasted.request)
    assert np.array_equal(pixels(again.images[0].image), pixels(result.images[0].image))


def test_pasting_names_missing_loras_and_finds_renamed_ones_by_hash(saving):
    from extensions.lora.library import library_for

    library = library_for(saving.manager)
    digest = library.with_hash(library.find("a"))[:12]
    text = f'x <lora:gone:1> <lora:oldname:0.5>\nSteps: 2, Seed: 3, Lora hashes: "gone: 0123456789ab, oldname: {digest}"'
    pasted = request_from_infotext(text, saving.plugins, saving.manager)
    assert pasted.request.prompt == "x <lora:gone:1> <lora:a:0.5>"  # renamed to the local file, as A1111 does
    assert pasted.notices == ["LoRA 'gone' (hash 0123456789ab) is not in models/Lora; the image used it"]
    assert "Lora hashes" not in pasted.unknown


def test_a_pickle_is_listed_as_refused_without_being_opened(tmp_path):
    paths = Paths.from_flags(data_dir=tmp_path)
    marker = tmp_path / "unpickled"
    folder = paths.folder("lora")
    folder.mkdir(parents=True)
    (folder / "evil.pt").write_bytes(pickle.dumps(Trap(marker)))
    items, _ = listing(paths)
    assert items[0]["format"] == "pickle" and "refused" in items[0]["error"] and not marker.exists()
    assert isinstance(Path(items[0]["path"]), Path)
