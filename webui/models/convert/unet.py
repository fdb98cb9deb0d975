"""diffusers UNet2DConditionModel names -> the original LDM `openaimodel.UNetModel` names.

diffusers ships only LDM -> diffusers (`convert_ldm_unet_checkpoint`); this is its inverse. The LDM
block index of every tensor is computed from the model's config (levels, layers per block, which
levels have attention, mid block present or not), never from an SD1 table, so SDXL, SSD-1B, Vega and
the refiner map correctly. Transformer blocks keep their names: both layouts call them
`transformer_blocks.N.attn1...`, so the transformer depth per block needs no bookkeeping here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

# diffusers ResnetBlock2D child -> LDM ResBlock child
RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    # SDXL's text_time embedding and SD2-unCLIP-style class projections both live in LDM's label_emb
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
}
_BLOCK = re.compile(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)")
_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")


@dataclass(frozen=True)
class UNetPlan:
    """Where each diffusers block lands among LDM's input/middle/output blocks."""

    levels: int
    layers_per_block: int
    up_has_attention: tuple[bool, ...]
    mid_has_attention: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UNetPlan:
        lpb = config["layers_per_block"]
        if not isinstance(lpb, int):
            if len(set(lpb)) != 1:
                # LDM checkpoints (and diffusers' own loader) assume one num_res_blocks for all levels.
                raise ValueError(f"per-level layers_per_block {list(lpb)} has no A1111/LDM single-file layout")
            lpb = lpb[0]
        mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
        if mid not in ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D", None):
            raise ValueError(f"mid_block_type {mid!r} has no LDM layout")
        return cls(
            levels=len(config["down_block_types"]),
            layers_per_block=lpb,
            up_has_attention=tuple("CrossAttn" in t for t in config["up_block_types"]),
            mid_has_attention=mid == "UNetMidBlock2DCrossAttn",
        )

    def key(self, name: str) -> str:
        """The LDM name (without `model.diffusion_model.`) of one diffusers UNet tensor."""
        for prefix, ldm in TOP_LEVEL.items():
            if name.startswith(prefix + "."):
                return ldm + name[len(prefix) :]
        step = self.layers_per_block + 1  # LDM: lpb resnet(+attn) blocks, then one resampler block
        if m := _BLOCK.fullmatch(name):
            side, level, kind, idx, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
            if side == "down_blocks":
                first = 1 + level * step
                if kind == "resnets":
                    return f"input_blocks.{first + idx}.0.{_resnet(rest)}"
                if kind == "attentions":
                    return f"input_blocks.{first + idx}.1.{rest}"
                if kind == "downsamplers" and idx == 0 and rest.startswith("conv."):
                    return f"input_blocks.{first + self.layers_per_block}.0.op.{rest[5:]}"
            else:
                first = level * step
                if kind == "resnets":
                    return f"output_blocks.{first + idx}.0.{_resnet(rest)}"
                if kind == "attentions":
                    return f"output_blocks.{first + idx}.1.{rest}"
                if kind == "upsamplers" and idx == 0:
                    sub = 2 if self.up_has_attention[level] else 1
                    return f"output_blocks.{first + self.layers_per_block}.{sub}.{rest}"
        if m := _MID.fullmatch(name):
            kind, idx, rest = m[1], int(m[2]), m[3]
            if kind == "resnets":
                pos = 2 * idx if self.mid_has_attention else idx
                return f"middle_block.{pos}.{_resnet(rest)}"
            return f"middle_block.{2 * idx + 1}.{rest}"
        # e.g. LoRA/IP-Adapter layers still attached: fuse and unload them before saving
        raise KeyError(f"UNet tensor {name!r} has no known LDM name")


def _resnet(rest: str) -> str:
    child, _, tail = rest.partition(".")
    if child not in RESNET_NAMES:
        raise KeyError(f"unexpected resnet tensor {rest!r}")
    return f"{RESNET_NAMES[child]}.{tail}"


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """LDM-named UNet tensors (same tensor objects, no copies), keyed without the checkpoint prefix."""
    plan = UNetPlan.from_config(config)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        key = plan.key(name)
        if key in out:
            raise ValueError(f"two UNet tensors map to LDM name {key!r}")
        out[key] = tensor
    return out
