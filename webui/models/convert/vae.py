"""diffusers AutoencoderKL names -> the original LDM autoencoder names (`first_stage_model.*`).

The inverse of diffusers' `convert_ldm_vae_checkpoint`: LDM numbers decoder levels from the lowest
resolution up (`up.0` is the last diffusers up block), and its mid-block attention uses 1x1 convs,
so q/k/v/proj_out weights are stored as [C, C, 1, 1] like every A1111 file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_ROOT = {
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_norm_out": "decoder.norm_out",
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_out": "encoder.conv_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_out": "decoder.conv_out",
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
}
_DOWN = re.compile(r"encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.+)")
_UP = re.compile(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)")
_MID = re.compile(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)")


def _resnet(rest: str) -> str:
    return rest.replace("conv_shortcut.", "nin_shortcut.", 1) if rest.startswith("conv_shortcut.") else rest


def vae_key(name: str, num_up_blocks: int) -> str:
    """The LDM name (without `first_stage_model.`) of one diffusers VAE tensor."""
    for prefix, ldm in _ROOT.items():
        if name.startswith(prefix + "."):
            return ldm + name[len(prefix) :]
    if m := _DOWN.fullmatch(name):
        level, kind, idx, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"encoder.down.{level}.block.{idx}.{_resnet(rest)}"
        return f"encoder.down.{level}.downsample.{rest}"
    if m := _UP.fullmatch(name):
        level, kind, idx, rest = num_up_blocks - 1 - int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"decoder.up.{level}.block.{idx}.{_resnet(rest)}"
        return f"decoder.up.{level}.upsample.{rest}"
    if m := _MID.fullmatch(name):
        side, kind, idx, rest = m[1], m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"{side}.mid.block_{idx + 1}.{_resnet(rest)}"
        for child, ldm in _ATTN.items():
            if rest.startswith(child + "."):
                return f"{side}.mid.attn_{idx + 1}.{ldm}{rest[len(child):]}"
    raise KeyError(f"VAE tensor {name!r} has no known LDM name")


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """LDM-named VAE tensors keyed without the checkpoint prefix; attention matrices become 1x1 convs."""
    out: dict[str, torch.Tensor] = {}
    num_up = len(config["up_block_types"])
    for name, tensor in state_dict.items():
        key = vae_key(name, num_up)
        if ".mid.attn_" in key and key.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor.reshape(*tensor.shape, 1, 1)
        if key in out:
            raise ValueError(f"two VAE tensors map to LDM name {key!r}")
        out[key] = tensor
    return out
