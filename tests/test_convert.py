"""The diffusers -> A1111 converter, checked by loading its files back through diffusers itself.

Every family: tiny pipeline -> single file -> `from_single_file(config=<folder from the embedded
configs>)` -> the same weights bit for bit and the same image. Layout files: the real header of each
family over a sparse data region, loadable at full size in seconds."""

from __future__ import annotations

import json
import os
import re

import diffusers
import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
from PIL import Image
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel

from webui.models.clip_tokenizer import PAD_CLIP_L, PAD_OPEN_CLIP, clip_tokenizer
from webui.models.convert import (
    METADATA_FAMILY,
    empty_components,
    layout_state_dict,
    pipeline_configs,
    pipeline_to_ldm,
    read_embedded_configs,
    save_single_file,
    write_config_folder,
    write_layout_file,
)
from webui.models.convert.unet import unet_to_ldm
from webui.models.families import CONFIG_ROOT
from webui.models.tiny import FAMILIES, STRUCTURES, tiny_pipeline

MODELS = ("unet", "vae", "text_encoder", "text_encoder_2")
pytestmark = pytest.mark.usefixtures("no_network")  # HF_HUB_OFFLINE=1 and a socket guard (conftest.py)


def generate(pipe, family: str, seed: int = 3) -> np.ndarray:
    """A 2-step 64x64 image: txt2img, inpaint with image+mask, or the refiner's img2img."""
    s = STRUCTURES[family]
    kw = dict(prompt="a red cube", num_inference_steps=2, output_type="np")
    kw["generator"] = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    if s.in_channels == 9:
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[16:48, 16:48] = 255
        kw.update(image=image, mask_image=Image.fromarray(mask), height=64, width=64, strength=1.0)
    elif s.arch == "refiner":
        kw.update(image=image, strength=1.0)
    else:
        kw.update(height=64, width=64)
    return pipe(**kw).images[0]


def load_back(pipe, path, config_dir, **extra):
    """from_single_file offline, tokenizers and scheduler passed in as Easel's loader does."""
    cls = getattr(diffusers, type(pipe).__name__)
    names = ("tokenizer", "tokenizer_2", "scheduler")
    parts = {k: getattr(pipe, k) for k in names if getattr(pipe, k, None) is not None}
    if hasattr(pipe, "safety_checker"):
        parts.update(safety_checker=None, feature_extractor=None)
    return cls.from_single_file(str(path), config=str(config_dir), local_files_only=True, **parts, **extra)


def assert_same_weights(a, b):
    for name in MODELS:
        ma, mb = getattr(a, name, None), getattr(b, name, None)
        assert (ma is None) == (mb is None), name
        if ma is None:
            continue
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys(), name
        for key, t in sa.items():
            assert not sb[key].is_meta, f"{name}.{key} left on meta"
            assert sb[key].dtype == t.dtype and torch.equal(sb[key], t), f"{name}.{key} differs"


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_round_trip_is_bitwise(family, tmp_path, no_network):
    pipe = tiny_pipeline(family, seed=0)
    path = save_single_file(pipe, tmp_path / f"{family}.safetensors", metadata={METADATA_FAMILY: family})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind

    configs = read_embedded_configs(path)
    assert set(configs) == {"model_index", "scheduler", *(m for m in MODELS if getattr(pipe, m, None) is not None)}
    with safe_open(str(path), "pt") as f:
        assert f.metadata()[METADATA_FAMILY] == family
    loaded = load_back(pipe, path, write_config_folder(configs, tmp_path / "config"))

    assert_same_weights(pipe, loaded)
    for name in ("unet", "vae"):
        public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
        assert public(getattr(loaded, name).config) == public(getattr(pipe, name).config)
    assert np.array_equal(generate(loaded, family), generate(pipe, family))
    assert no_network == []  # not one connection was attempted


def test_half_precision_file_loads_as_the_half_model(tmp_path):
    pipe = tiny_pipeline("sdxl-base", seed=1)
    path = save_single_file(pipe, tmp_path / "half.safetensors", dtype=torch.float16)
    with safe_open(str(path), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    config_dir = write_config_folder(read_embedded_configs(path), tmp_path / "c")
    loaded = load_back(pipe, path, config_dir, torch_dtype=torch.float16)
    assert_same_weights(pipe.to(torch.float16), loaded)


def test_a1111_names_and_layouts(tmp_path):
    sd1, sd2 = pipeline_to_ldm(tiny_pipeline("sd1")), pipeline_to_ldm(tiny_pipeline("sd2"))
    xl_pipe = tiny_pipeline("sdxl-base")
    xl, refiner = pipeline_to_ldm(xl_pipe), pipeline_to_ldm(tiny_pipeline("sdxl-refiner"))

    # keys diffusers' own detection looks for, and A1111's VAE attention as 1x1 convs
    assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in sd1
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in sd1
    assert sd1["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert sd1["first_stage_model.decoder.mid.attn_1.proj_out.weight"].shape[2:] == (1, 1)
    # SD1 transformers project with 1x1 convs, SD2/SDXL with linear layers
    assert sd1["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 4
    assert sd2["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 2

    # SD2: OpenCLIP layout, q/k/v fused, one identity block past diffusers' 2 layers, identity projection
    w = 32
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * w, w)
    assert "cond_stage_model.model.transformer.resblocks.2.mlp.c_proj.weight" in sd2
    assert "cond_stage_model.model.transformer.resblocks.3.ln_1.weight" not in sd2
    assert torch.equal(sd2["cond_stage_model.model.text_projection"], torch.eye(w))
    assert not any(k.startswith("cond_stage_model.transformer.") for k in sd2)

    # SDXL: CLIP-L as HF, bigG as OpenCLIP with the transposed projection; add_embedding is label_emb
    te2 = xl_pipe.text_encoder_2
    assert torch.equal(xl["conditioner.embedders.1.model.text_projection"], te2.text_projection.weight.T)
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in xl
    assert torch.equal(xl["model.diffusion_model.label_emb.0.0.weight"], xl_pipe.unet.add_embedding.linear_1.weight)
    q = te2.state_dict()["text_model.encoder.layers.1.self_attn.q_proj.weight"]
    assert torch.equal(xl["conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"][: q.shape[0]], q)

    # refiner: bigG alone, as embedder 0
    assert "conditioner.embedders.0.model.text_projection" in refiner
    assert not any(k.startswith(("conditioner.embedders.1.", "conditioner.embedders.0.transformer.")) for k in refiner)


def _depths(keys, block: str) -> list[int]:
    """ComfyUI's transformer_depth: blocks per LDM resnet block of input/output_blocks."""
    depth: dict[int, int] = {}
    for k in keys:
        if m := re.match(rf"model\.diffusion_model\.{block}\.(\d+)\.0\.in_layers\.0\.weight$", k):
            depth.setdefault(int(m[1]), 0)
        if m := re.match(rf"model\.diffusion_model\.{block}\.(\d+)\.1\.transformer_blocks\.(\d+)\.", k):
            depth[int(m[1])] = max(depth.get(int(m[1]), 0), int(m[2]) + 1)
    return [depth[b] for b in sorted(depth)]


@pytest.mark.parametrize(
    "family, inputs, middle, outputs",
    [
        ("sd1", [1, 1, 1, 1, 1, 1, 0, 0], 1, [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        ("sdxl-base", [0, 0, 2, 2, 10, 10], 10, [10, 10, 10, 2, 2, 2, 0, 0, 0]),
        ("ssd-1b", [0, 0, 2, 2, 4, 4], None, [4, 4, 10, 2, 1, 1, 0, 0, 0]),
        ("vega", [0, 0, 1, 1, 2, 2], None, [2, 2, 2, 1, 1, 1, 0, 0, 0]),
        ("sdxl-refiner", [0, 0, 4, 4, 4, 4, 0, 0], 4, [0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0]),
    ],
)
def test_unet_blocks_follow_the_config(family, inputs, middle, outputs):
    keys = set(pipeline_to_ldm(tiny_pipeline(family)))
    assert _depths(keys, "input_blocks") == inputs
    assert _depths(keys, "output_blocks") == outputs
    unet = "model.diffusion_model."
    mid_blocks = {int(k.split(".")[3]) for k in keys if k.startswith(unet + "middle_block.")}
    mid_depth = {int(m[1]) for k in keys if (m := re.match(r".*middle_block\.1\.transformer_blocks\.(\d+)\.", k))}
    if middle is None:  # SSD-1B / Vega: a single resnet, no transformer
        assert mid_blocks == {0} and unet + "middle_block.0.in_layers.0.weight" in keys
    else:
        assert mid_blocks == {0, 1, 2} and 1 + max(mid_depth) == middle


def test_sd2_padding_block_is_an_exact_identity():
    """What the 24th SD2 block does if a loader does run it: nothing, bit for bit."""
    te = tiny_pipeline("sd2").text_encoder
    ldm = pipeline_to_ldm(tiny_pipeline("sd2"))
    cfg = CLIPTextConfig(**{**te.config.to_dict(), "num_hidden_layers": 3})
    deep = CLIPTextModel(cfg).eval()
    sd = convert_open_clip_checkpoint(deep, ldm, prefix="cond_stage_model.model.")
    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if k != "text_projection.weight"}
    deep.load_state_dict(sd, strict=True)
    ids = clip_tokenizer(PAD_OPEN_CLIP)(["a red cube"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(deep(ids).last_hidden_state, te(ids).last_hidden_state)


def test_unknown_names_and_layouts_are_refused():
    unet = tiny_pipeline("sd1").unet
    with pytest.raises(KeyError, match="no known LDM name"):
        unet_to_ldm({"down_blocks.0.motion_modules.0.weight": torch.zeros(1)}, unet.config)
    with pytest.raises(ValueError, match="per-level layers_per_block"):
        unet_to_ldm(unet.state_dict(), {**unet.config, "layers_per_block": [1, 2, 2, 2]})


def test_the_same_model_always_gives_the_same_file(tmp_path):
    """The file hash names the model in infotexts: a demo model written on two machines must match."""
    pipe = tiny_pipeline("sd1", seed=0)
    metadata = {"easel.family": "sd1", "b.extra": "2", "a.extra": "1"}
    files = [save_single_file(pipe, tmp_path / f"copy{i}.safetensors", metadata=metadata).read_bytes()
             for i in range(6)]
    assert all(f == files[0] for f in files[1:])
    with safe_open(str(tmp_path / "copy0.safetensors"), "pt") as f:
        assert f.metadata()["easel.family"] == "sd1" and f.metadata()["a.extra"] == "1"
        written = {k: f.get_tensor(k) for k in f.keys()}
    expected = pipeline_to_ldm(pipe)
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[k], expected[k].contiguous()) for k in expected)


def test_failed_save_keeps_the_old_file(tmp_path):
    path = save_single_file(tiny_pipeline("sd1"), tmp_path / "model.safetensors")
    before = path.read_bytes()
    pipe = tiny_pipeline("sd1", seed=5)
    pipe.vae = empty_components(CONFIG_ROOT / "sd1")["vae"]  # meta tensors cannot be saved
    with pytest.raises(ValueError, match="meta device"):
        save_single_file(pipe, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_config_folder_names_cannot_escape(tmp_path):
    configs = pipeline_configs(tiny_pipeline("sd1"))
    with pytest.raises(ValueError, match="invalid component name"):
        write_config_folder({**configs, "../evil": {}}, tmp_path / "c")
    with pytest.raises(ValueError, match="model_index"):
        write_config_folder({"unet": configs["unet"]}, tmp_path / "c")


@pytest.mark.parametrize("family", ["sd1", "sdxl-base"])
def test_diffusers_folder_round_trip(family, tmp_path):
    pipe = tiny_pipeline(family, seed=2)
    pipe.save_pretrained(tmp_path)
    loaded = getattr(diffusers, type(pipe).__name__).from_pretrained(tmp_path, local_files_only=True)
    assert_same_weights(pipe, loaded)
    assert np.array_equal(generate(loaded, family), generate(pipe, family))


REAL = [f for f in FAMILIES if (CONFIG_ROOT / f / "model_index.json").is_file()]


@pytest.mark.parametrize("family", REAL)
def test_layout_file_has_the_real_header_and_no_data(family, tmp_path):
    path = write_layout_file(CONFIG_ROOT / family, tmp_path / f"{family}.safetensors")
    expected = layout_state_dict(CONFIG_ROOT / family)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    assert os.path.getsize(path) == 8 + n + max(v["data_offsets"][1] for v in header.values())
    assert os.stat(path).st_blocks * 512 < 4 << 20  # a hole, not gigabytes of zeros
    with safe_open(str(path), "pt") as f:  # safetensors itself accepts the header
        assert set(f.keys()) == set(expected)
        for key, t in expected.items():
            assert f.get_slice(key).get_shape() == list(t.shape), key
    assert {v["dtype"] for v in header.values()} == {"F16"}
    assert read_embedded_configs(path) is None  # like a real download: no Easel metadata


@pytest.mark.parametrize("family", [f for f in ("sd1", "sdxl-base") if f in REAL])
def test_layout_file_loads_at_full_size(family, tmp_path):
    path = write_layout_file(CONFIG_ROOT / family, tmp_path / f"{family}.safetensors")
    pipe_cls = getattr(diffusers, STRUCTURES[family].pipeline)
    parts = {"tokenizer": clip_tokenizer(PAD_CLIP_L), "scheduler": diffusers.EulerDiscreteScheduler()}
    if family == "sd1":
        parts.update(safety_checker=None, feature_extractor=None)
    else:
        parts["tokenizer_2"] = clip_tokenizer(PAD_OPEN_CLIP)
    pipe = pipe_cls.from_single_file(
        str(path), config=str(CONFIG_ROOT / family), local_files_only=True, torch_dtype=torch.float16, **parts
    )
    for name, model in empty_components(CONFIG_ROOT / family).items():
        loaded = getattr(pipe, name)
        assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters()), name
        assert not any(t.is_meta for t in loaded.state_dict().values()), name
        assert {p.dtype for p in loaded.parameters()} == {torch.float16}, name
    assert sum(p.numel() for p in pipe.unet.parameters()) == {"sd1": 859_520_964, "sdxl-base": 2_567_463_684}[family]
