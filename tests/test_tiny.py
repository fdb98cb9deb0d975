"""Tiny models: deterministic, small, and built with each family's real block layout."""

from __future__ import annotations

import inspect
import json
import re

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from webui.models.convert import layout_state_dict, pipeline_to_ldm
from webui.models.families import CONFIG_ROOT
from webui.models.tiny import FAMILIES, STRUCTURES, tiny_configs, tiny_pipeline

MODELS = ("unet", "vae", "text_encoder", "text_encoder_2")
REAL = [f for f in FAMILIES if (CONFIG_ROOT / f / "model_index.json").is_file()]
CLIP_L, CLIP_G = "CLIPTextModel", "CLIPTextModelWithProjection"


def weights(pipe) -> dict[str, torch.Tensor]:
    return {
        f"{m}.{k}": v
        for m in MODELS
        if getattr(pipe, m, None) is not None
        for k, v in getattr(pipe, m).state_dict().items()
    }


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a, b, c = (tiny_pipeline("sdxl-base", seed=s) for s in (7, 7, 8))
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["unet.conv_in.weight"], wc["unet.conv_in.weight"])
    # each component has its own seed, so the two encoders do not share a random stream
    clip_l = wa["text_encoder.embeddings.token_embedding.weight"]
    clip_g = wa["text_encoder_2.text_model.embeddings.token_embedding.weight"]
    assert not torch.equal(clip_l[:, : clip_g.shape[1]], clip_g)


@pytest.mark.parametrize(
    "family, pipeline, levels, in_ch, linear, depth, time_ids, encoders",
    [
        ("sd1", "StableDiffusionPipeline", 4, 4, False, 1, None, [CLIP_L, None]),
        ("sd1-inpaint", "StableDiffusionInpaintPipeline", 4, 9, False, 1, None, [CLIP_L, None]),
        ("sd2", "StableDiffusionPipeline", 4, 4, True, 1, None, [CLIP_L, None]),
        ("sd2-inpaint", "StableDiffusionInpaintPipeline", 4, 9, True, 1, None, [CLIP_L, None]),
        ("sdxl-base", "StableDiffusionXLPipeline", 3, 4, True, [1, 2, 10], 6, [CLIP_L, CLIP_G]),
        ("sdxl-inpaint", "StableDiffusionXLInpaintPipeline", 3, 9, True, [1, 2, 10], 6, [CLIP_L, CLIP_G]),
        ("ssd-1b", "StableDiffusionXLPipeline", 3, 4, True, [[1], [2, 2], [4, 4]], 6, [CLIP_L, CLIP_G]),
        ("vega", "StableDiffusionXLPipeline", 3, 4, True, [1, 1, 2], 6, [CLIP_L, CLIP_G]),
        ("sdxl-refiner", "StableDiffusionXLImg2ImgPipeline", 4, 4, True, 4, 5, [None, CLIP_G]),
    ],
)
def test_structural_traits(family, pipeline, levels, in_ch, linear, depth, time_ids, encoders):
    pipe = tiny_pipeline(family)
    assert type(pipe).__name__ == pipeline
    u = pipe.unet.config
    assert len(u.down_block_types) == levels and u.layers_per_block == 2
    assert u.in_channels == in_ch and u.use_linear_projection == linear
    assert u.transformer_layers_per_block == depth
    encs = [getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2")]
    assert [type(e).__name__ if e is not None else None for e in encs] == encoders
    if time_ids is None:
        assert u.addition_embed_type is None
    else:  # SDXL's "2816-style" label_emb: time ids x embed dim + the pooled bigG projection
        assert u.addition_embed_type == "text_time"
        pooled = pipe.text_encoder_2.config.projection_dim
        assert u.projection_class_embeddings_input_dim == time_ids * u.addition_time_embed_dim + pooled
        assert u.cross_attention_dim == sum(e.config.hidden_size for e in encs if e is not None)
    v = pipe.vae.config
    assert len(v.block_out_channels) == 4 and v.latent_channels == 4 and pipe.vae_scale_factor == 8
    assert v.scaling_factor == (0.13025 if time_ids else 0.18215)
    if family == "sdxl-refiner":
        assert pipe.tokenizer is None and pipe.config.requires_aesthetics_score is True
    for tok in (pipe.tokenizer, getattr(pipe, "tokenizer_2", None)):
        assert tok is None or (len(tok) == 49408 and tok.model_max_length == 77)


def test_tokenizers_pad_like_the_real_encoders_and_are_private_copies():
    sd1, sd2, xl = tiny_pipeline("sd1"), tiny_pipeline("sd2"), tiny_pipeline("sdxl-base")
    assert sd1.tokenizer.pad_token == "<|endoftext|>" and sd2.tokenizer.pad_token == "!"
    assert xl.tokenizer.pad_token == "<|endoftext|>" and xl.tokenizer_2.pad_token == "!"
    sd1.tokenizer.add_tokens(["<my-embedding>"])  # what textual inversion does
    assert len(tiny_pipeline("sd1").tokenizer) == 49408


def _unet_structure(cfg: dict) -> dict:
    """What detection and the converter read from a UNet config, with diffusers' defaults filled in."""
    keys = (
        "in_channels", "down_block_types", "up_block_types", "mid_block_type", "layers_per_block",
        "transformer_layers_per_block", "reverse_transformer_layers_per_block", "addition_embed_type",
    )  # fmt: skip
    defaults = inspect.signature(UNet2DConditionModel.__init__).parameters
    out = {k: cfg.get(k, defaults[k].default) for k in keys}
    out["down_block_types"], out["up_block_types"] = list(out["down_block_types"]), list(out["up_block_types"])
    out["use_linear_projection"] = bool(cfg.get("use_linear_projection"))
    out["upcast_attention"] = bool(cfg.get("upcast_attention"))
    widths = cfg["block_out_channels"]
    out["width_changes"] = [b != a for a, b in zip(widths, widths[1:])]  # decides which resnets get shortcuts
    return out


def _time_ids(configs: dict) -> int | None:
    """How many SDXL add_time_ids the label_emb takes: (input width - pooled bigG width) / embed dim."""
    u = configs["unet"]
    if u.get("addition_embed_type") != "text_time":
        return None
    pooled = configs["text_encoder_2"]["projection_dim"]
    return (u["projection_class_embeddings_input_dim"] - pooled) // u["addition_time_embed_dim"]


def _real_configs(family: str) -> dict[str, dict]:
    folder = CONFIG_ROOT / family
    configs = {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/*.json")}
    configs["model_index"] = json.loads((folder / "model_index.json").read_text())
    return configs


@pytest.mark.parametrize("family", REAL)
def test_tiny_config_matches_the_real_one(family):
    real, tiny = _real_configs(family), tiny_configs(family)
    assert _unet_structure(tiny["unet"]) == _unet_structure(real["unet"])
    assert _time_ids(tiny) == _time_ids(real)
    for name in ("text_encoder", "text_encoder_2"):
        present = (real["model_index"].get(name) or [None])[0] is not None
        assert (name in tiny) == present
        if present:
            assert tiny[name]["architectures"] == real[name]["architectures"]
            assert tiny[name]["hidden_act"] == real[name]["hidden_act"]
    rv, tv = real["vae"], tiny["vae"]
    assert len(tv["block_out_channels"]) == len(rv["block_out_channels"])
    assert tv["latent_channels"] == rv["latent_channels"] and tv["layers_per_block"] == rv["layers_per_block"]
    assert tv["scaling_factor"] == rv.get("scaling_factor", 0.18215)
    assert tv["force_upcast"] == rv.get("force_upcast", True)
    assert tiny["scheduler"]["_class_name"] == real["scheduler"]["_class_name"]
    assert tiny["scheduler"]["prediction_type"] == real["scheduler"].get("prediction_type", "epsilon")
    assert tiny["model_index"]["_class_name"] == real["model_index"]["_class_name"]
    for key in ("requires_aesthetics_score", "force_zeros_for_empty_prompt"):
        if key in real["model_index"]:
            assert tiny["model_index"][key] == real["model_index"][key], key


@pytest.mark.parametrize("family", REAL)
def test_tiny_checkpoint_has_the_real_key_layout(family):
    """The same A1111 tensor names as a real file; only the text encoders' depth (2 layers) differs."""

    def names(keys):
        return {re.sub(r"\.(resblocks|layers)\.\d+\.", r".\1.N.", k) for k in keys}

    assert names(pipeline_to_ldm(tiny_pipeline(family))) == names(layout_state_dict(CONFIG_ROOT / family))


def test_sdxl_is_small_and_generates():
    pipe = tiny_pipeline("sdxl-base")
    assert sum(t.numel() * t.element_size() for t in weights(pipe).values()) < 16e6
    generator = torch.Generator().manual_seed(0)
    image = pipe("a cube", height=64, width=64, num_inference_steps=2, output_type="np", generator=generator).images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all() and image.std() > 0


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="no tiny model for family 'sd3'"):
        tiny_pipeline("sd3")
    assert set(STRUCTURES) == set(FAMILIES)
