"""Tiny random-weight pipelines with each family's real block layout, for tests and demos.

Everything structure-based detection and the single-file converter read is kept as in the real
model: UNet levels, block types, layers per block, transformer depth per block (down, mid and up),
mid block present or not, input channels, linear vs conv projections, SDXL's text_time embedding
with the real number of time ids, the text encoder classes and activations, a 4-level VAE (8x down,
4 latent channels, the real scaling factor). Only widths shrink, so a whole SDXL pipeline is a few
MB and a 64x64 two-step generation takes a fraction of a second on CPU.

The two SDXL text encoders get different widths (32 and 24): diffusers tells CLIP-L from bigG in a
single file by comparing widths, exactly as the real 768 vs 1280 differ."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers import pipelines as diffusers_pipelines
from diffusers import schedulers as diffusers_schedulers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from webui.models.clip_tokenizer import PAD_CLIP_L, PAD_OPEN_CLIP, clip_tokenizer

CA_DOWN, DOWN, CA_UP, UP = "CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"
MID_CA = "UNetMidBlock2DCrossAttn"
CLIP_L_WIDTH = 32
CLIP_G_WIDTH = 24  # SDXL's second encoder; must differ from CLIP-L's (see module docstring)
TIME_EMBED = 8  # addition_time_embed_dim (256 in the real SDXL)
TEXT_LAYERS = 2


@dataclass(frozen=True)
class Structure:
    """The part of a family's real UNet config that tiny models must keep."""

    pipeline: str
    arch: str  # "sd1" | "sd2" | "sdxl" | "refiner"
    down: tuple[str, ...]
    up: tuple[str, ...]
    channels: tuple[int, ...]  # tiny block_out_channels, in the real ratios (which levels change width)
    groups: int  # norm_num_groups dividing every width
    heads: tuple[int, ...]  # tiny attention_head_dim (diffusers' name for the number of heads)
    in_channels: int = 4
    depth: int | tuple[int, ...] = 1  # transformer_layers_per_block
    reverse_depth: tuple | None = None  # reverse_transformer_layers_per_block (asymmetric UNets)
    mid: str | None = MID_CA
    time_ids: int = 0  # SDXL add_time_ids: 6 (size, crop, target) or 5 for the refiner (aesthetic score)
    scheduler: str = "EulerDiscreteScheduler"
    prediction: str = "epsilon"
    upcast_attention: bool = False
    vae_force_upcast: bool = True  # diffusers' default; the SDXL inpainting VAE ships fp16-safe (False)


_SD = dict(down=(CA_DOWN, CA_DOWN, CA_DOWN, DOWN), up=(UP, CA_UP, CA_UP, CA_UP), channels=(8, 16, 32, 32), groups=8)
_XL = dict(
    down=(DOWN, CA_DOWN, CA_DOWN), up=(CA_UP, CA_UP, UP), channels=(4, 8, 16), groups=4, heads=(1, 2, 4), time_ids=6
)
_SD1 = dict(_SD, arch="sd1", heads=(2, 2, 2, 2))
_SD2 = dict(_SD, arch="sd2", heads=(1, 2, 4, 4))
_BASE = dict(_XL, arch="sdxl", depth=(1, 2, 10))
STRUCTURES: dict[str, Structure] = {
    "sd1": Structure("StableDiffusionPipeline", scheduler="PNDMScheduler", **_SD1),
    "sd1-inpaint": Structure("StableDiffusionInpaintPipeline", in_channels=9, scheduler="DDIMScheduler", **_SD1),
    "sd2": Structure(
        "StableDiffusionPipeline", scheduler="DDIMScheduler", prediction="v_prediction", upcast_attention=True, **_SD2
    ),
    "sd2-inpaint": Structure("StableDiffusionInpaintPipeline", in_channels=9, scheduler="PNDMScheduler", **_SD2),
    "sdxl-base": Structure("StableDiffusionXLPipeline", **_BASE),
    "sdxl-inpaint": Structure("StableDiffusionXLInpaintPipeline", in_channels=9, vae_force_upcast=False, **_BASE),
    # SSD-1B and Vega keep a single resnet as mid block and thin the transformer depths
    "ssd-1b": Structure(
        "StableDiffusionXLPipeline",
        arch="sdxl",
        depth=((1,), (2, 2), (4, 4)),
        reverse_depth=((4, 4, 10), (2, 1, 1), 1),
        mid="UNetMidBlock2D",
        **_XL,
    ),
    "vega": Structure("StableDiffusionXLPipeline", arch="sdxl", depth=(1, 1, 2), mid="UNetMidBlock2D", **_XL),
    "sdxl-refiner": Structure(
        "StableDiffusionXLImg2ImgPipeline",
        arch="refiner",
        down=(DOWN, CA_DOWN, CA_DOWN, DOWN),
        up=(UP, CA_UP, CA_UP, UP),
        channels=(8, 16, 32, 32),
        groups=8,
        heads=(1, 2, 4, 4),
        depth=4,
        time_ids=5,
    ),
}
FAMILIES = tuple(STRUCTURES)

_SCHEDULER_BASE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}


def _structure(family: str) -> Structure:
    try:
        return STRUCTURES[family]
    except KeyError:
        raise ValueError(f"no tiny model for family {family!r}; known: {', '.join(FAMILIES)}") from None


def _text_config(width: int, *, open_clip: bool, projection: bool) -> dict[str, Any]:
    return {
        "architectures": ["CLIPTextModelWithProjection" if projection else "CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": 49408,
        "max_position_embeddings": 77,
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": TEXT_LAYERS,
        "num_attention_heads": 4,
        "projection_dim": width,
        # OpenCLIP towers (SD2, bigG) use exact GELU and pad with "!"; OpenAI's CLIP-L QuickGELU
        "hidden_act": "gelu" if open_clip else "quick_gelu",
        "pad_token_id": 1,  # as in the real configs; the tokenizers decide the padding
        "bos_token_id": 49406,
        "eos_token_id": 49407,
    }


def _as_lists(value: Any) -> Any:
    return [_as_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _unet_config(s: Structure) -> dict[str, Any]:
    cross = {"sd1": CLIP_L_WIDTH, "sd2": CLIP_L_WIDTH, "sdxl": CLIP_L_WIDTH + CLIP_G_WIDTH, "refiner": CLIP_G_WIDTH}
    unet: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 8,
        "in_channels": s.in_channels,
        "out_channels": 4,
        "down_block_types": list(s.down),
        "up_block_types": list(s.up),
        "mid_block_type": s.mid,
        "block_out_channels": list(s.channels),
        "layers_per_block": 2,
        "norm_num_groups": s.groups,
        "attention_head_dim": s.heads[0] if s.arch == "sd1" else list(s.heads),
        "cross_attention_dim": cross[s.arch],
        "transformer_layers_per_block": _as_lists(s.depth),
        "reverse_transformer_layers_per_block": _as_lists(s.reverse_depth),
        "use_linear_projection": s.arch != "sd1",
        "upcast_attention": s.upcast_attention,
    }
    if s.time_ids:
        unet.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED,
            projection_class_embeddings_input_dim=s.time_ids * TIME_EMBED + CLIP_G_WIDTH,
        )
    return unet


def _vae_config(s: Structure) -> dict[str, Any]:
    xl = s.arch in ("sdxl", "refiner")
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [8, 16, 32, 32],  # the real (128, 256, 512, 512) / 16
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 64,
        "scaling_factor": 0.13025 if xl else 0.18215,
        "force_upcast": s.vae_force_upcast,
    }


def tiny_configs(family: str) -> dict[str, dict[str, Any]]:
    """Component name -> config dict (diffusers/transformers), plus "model_index" naming the pipeline."""
    s = _structure(family)
    scheduler = {"_class_name": s.scheduler, **_SCHEDULER_BASE, "prediction_type": s.prediction}
    index: dict[str, Any] = {
        "_class_name": s.pipeline,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", s.scheduler],
    }
    configs: dict[str, dict[str, Any]] = {"model_index": index, "unet": _unet_config(s), "vae": _vae_config(s)}
    if s.arch in ("sd1", "sd2"):
        configs["text_encoder"] = _text_config(CLIP_L_WIDTH, open_clip=s.arch == "sd2", projection=False)
        index.update(requires_safety_checker=False, safety_checker=[None, None], feature_extractor=[None, None])
    else:
        if s.arch == "sdxl":
            configs["text_encoder"] = _text_config(CLIP_L_WIDTH, open_clip=False, projection=False)
        else:  # the refiner conditions on bigG alone, plus an aesthetic score
            index.update(text_encoder=[None, None], tokenizer=[None, None])
        configs["text_encoder_2"] = _text_config(CLIP_G_WIDTH, open_clip=True, projection=True)
        index["force_zeros_for_empty_prompt"] = s.arch != "refiner"
        if s.pipeline != "StableDiffusionXLPipeline":  # img2img/inpaint take an aesthetic-score switch
            index["requires_aesthetics_score"] = s.arch == "refiner"
        scheduler.update(timestep_spacing="leading", interpolation_type="linear")
    for name in ("text_encoder", "text_encoder_2"):
        if name in configs:
            index[name] = ["transformers", configs[name]["architectures"][0]]
            index[name.replace("text_encoder", "tokenizer")] = ["transformers", "CLIPTokenizer"]
    configs["scheduler"] = scheduler
    return copy.deepcopy(configs)


def _seeded(seed: int, build):
    """Build a module under a private RNG seeded with `seed`: same seed, bitwise the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _init_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _tokenizer(pad_token: str) -> CLIPTokenizer:
    """A private copy: textual inversion adds tokens to its pipeline's tokenizer; the cached one must not change."""
    return copy.deepcopy(clip_tokenizer(pad_token))


def tiny_pipeline(family: str, seed: int = 0) -> DiffusionPipeline:
    """A ready pipeline of `family` with deterministic random weights (each component its own seed)."""
    configs = tiny_configs(family)
    s = _structure(family)
    index = configs["model_index"]
    parts: dict[str, Any] = {
        # eval() as from_pretrained leaves them: in train mode resnets make the shortcut input contiguous,
        # which changes float rounding, so a reloaded model would not reproduce images bit for bit
        "unet": _seeded(seed * 10 + 1, lambda: UNet2DConditionModel(**_init_kwargs(configs["unet"])).eval()),
        "vae": _seeded(seed * 10 + 2, lambda: AutoencoderKL(**_init_kwargs(configs["vae"])).eval()),
    }
    for n, name in enumerate(("text_encoder", "text_encoder_2")):
        if name in configs:
            arch = configs[name]["architectures"][0]
            cfg = CLIPTextConfig(**{k: v for k, v in configs[name].items() if k not in ("architectures", "model_type")})
            cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
            parts[name] = _seeded(seed * 10 + 3 + n, lambda: cls(cfg).eval())
    scheduler_cls = getattr(diffusers_schedulers, configs["scheduler"]["_class_name"])
    parts["scheduler"] = scheduler_cls.from_config(configs["scheduler"])
    if s.arch == "sd1" or s.arch == "sd2":
        parts["tokenizer"] = _tokenizer(PAD_CLIP_L if s.arch == "sd1" else PAD_OPEN_CLIP)
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        parts["tokenizer_2"] = _tokenizer(PAD_OPEN_CLIP)
        if s.arch == "sdxl":
            parts["tokenizer"] = _tokenizer(PAD_CLIP_L)
        else:
            parts.update(text_encoder=None, tokenizer=None)
        parts["force_zeros_for_empty_prompt"] = index["force_zeros_for_empty_prompt"]
        if "requires_aesthetics_score" in index:
            parts["requires_aesthetics_score"] = index["requires_aesthetics_score"]
    pipe = getattr(diffusers_pipelines, s.pipeline)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe
