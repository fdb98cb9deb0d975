"""transformers CLIP text encoders -> the names A1111/SGM checkpoints store them under.

Two layouts exist. OpenAI CLIP-L (SD1, SDXL's first encoder) is stored as the Hugging Face model
itself (`...transformer.text_model.*`). OpenCLIP encoders (SD2's ViT-H, SDXL's bigG) are stored in
open_clip's own layout: fused `in_proj_weight` = cat(q, k, v), `ln_1`/`mlp.c_fc`, and a
`text_projection` matrix that is the transpose of the HF Linear weight.

SD2's diffusers text encoder has 23 layers where the LDM file has 24: SD2 conditions on the
penultimate layer, so diffusers dropped the last one. To give the file the real key set we add that
24th block as an exact identity (zero output projections) plus an identity `text_projection`; every
SD2 loader (diffusers, A1111, ComfyUI) skips both."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _text_model_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys relative to `text_model.`; transformers >= 5.6 flattened CLIPTextModel (no `text_model.`)."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("text_projection."):
            out[k] = v
        else:
            out[k.removeprefix("text_model.")] = v
    return out


def clip_l_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF layout under `text_model.` (the prefix the LDM `transformer.` wrapper adds is the caller's)."""
    keys = _text_model_keys(state_dict)
    return {k if k.startswith("text_projection.") else f"text_model.{k}": v for k, v in keys.items()}


def open_clip_to_ldm(
    state_dict: Mapping[str, torch.Tensor], *, pad_penultimate: bool = False
) -> dict[str, torch.Tensor]:
    """OpenCLIP layout keyed relative to `...model.`; `pad_penultimate` adds SD2's unused last block."""
    sd = _text_model_keys(state_dict)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = v
        elif k == "embeddings.position_embedding.weight":
            out["positional_embedding"] = v
        elif k.startswith("final_layer_norm."):
            out["ln_final." + k.split(".", 1)[1]] = v
        elif k == "text_projection.weight":
            out["text_projection"] = v.T.contiguous()
        elif k == "embeddings.position_ids":
            continue  # a buffer open_clip does not have
        elif m := _LAYER.fullmatch(k):
            layer, rest = int(m[1]), m[2]
            if p := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
                qkv.setdefault((layer, p[2]), {})[p[1]] = v
                continue
            for hf, oc in _OPEN_CLIP_LAYER.items():
                if rest.startswith(hf + "."):
                    out[f"transformer.resblocks.{layer}.{oc}{rest[len(hf):]}"] = v
                    break
            else:
                raise KeyError(f"text encoder tensor {k!r} has no OpenCLIP name")
        else:
            raise KeyError(f"text encoder tensor {k!r} has no OpenCLIP name")
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"layer {layer} lacks one of q/k/v {kind}")
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    if pad_penultimate:
        out.update(_identity_block(out, 1 + max(layer for layer, _ in qkv)))
        if "text_projection" not in out:
            emb = out["token_embedding.weight"]
            out["text_projection"] = torch.eye(emb.shape[1], dtype=emb.dtype, device=emb.device)
    return out


def _identity_block(out: Mapping[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """A resblock shaped like block `index - 1` whose output projections are zero: x -> x exactly."""
    src = f"transformer.resblocks.{index - 1}."
    block = {}
    for k, v in out.items():
        if not k.startswith(src):
            continue
        name = k[len(src) :]
        is_norm_weight = name in ("ln_1.weight", "ln_2.weight")
        block[f"transformer.resblocks.{index}.{name}"] = (torch.ones_like if is_norm_weight else torch.zeros_like)(v)
    return block
