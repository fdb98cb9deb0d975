"""Which family a checkpoint belongs to, from its tensor names and shapes alone.

Decisions use structure that survives fine-tuning and resizing (which keys exist, how many
transformer blocks each UNet block has, conv vs linear projections, the text encoder layout,
input channels), the way ComfyUI and InvokeAI do. Widths are never needed, so the tiny test models
with the real block layout are detected like the real ones. Prediction type and the Turbo/Lightning
variants come from hints: an override `<name>.json`, A1111's sidecar `<name>.yaml`, safetensors
metadata, a `v_pred` marker key, the file name; else the family default (documented in families.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from webui.models.families import FAMILIES, VARIANTS
from webui.models.header import Header
from webui.models.ldm_keys import (
    REFINER_CLIP_G_PREFIX,
    SD1_CLIP_PREFIX,
    SD2_CLIP_PREFIX,
    SDXL_CLIP_G_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)

SDXL_DEPTHS = {(0, 0, 2, 2, 10, 10): "sdxl-base", (0, 0, 2, 2, 4, 4): "ssd-1b", (0, 0, 1, 1, 2, 2): "vega"}
REFINER_DEPTHS = (0, 0, 4, 4, 4, 4, 0, 0)
SD_DEPTHS = (1, 1, 1, 1, 1, 1, 0, 0)


@dataclass(frozen=True)
class Detection:
    family: str  # a FAMILIES key, "unknown" or "error"
    prediction: str | None = None  # "eps" | "v"
    variant: str | None = None  # "turbo" | "lightning"
    reason: str = ""  # how it was decided, or why it could not be

    @property
    def known(self) -> bool:
        return self.family in FAMILIES


@dataclass(frozen=True)
class UNetLayout:
    in_channels: int
    depths: tuple[int, ...]  # transformer blocks per resnet input block, like ComfyUI's transformer_depth
    adm_in: int | None  # SDXL's label_emb input width (None for SD1/SD2)
    linear_proj: bool | None
    text_encoders: str | None  # "clip-l" | "open-clip" | "sdxl" | "sdxl-refiner" | None


def unet_layout(h: Header) -> UNetLayout | None:
    keys = [k[len(UNET_PREFIX) :] for k in h.tensors if k.startswith(UNET_PREFIX)]
    if not keys:
        return None
    conv_in = h.shape(UNET_PREFIX + "input_blocks.0.0.weight")
    res_blocks: set[int] = set()
    depth: dict[int, int] = {}
    linear = None
    for k in keys:
        m = re.match(r"input_blocks\.(\d+)\.(\d+)\.(.*)", k)
        if not m:
            continue
        block, sub, rest = int(m[1]), int(m[2]), m[3]
        if sub == 0 and rest.startswith("in_layers."):
            res_blocks.add(block)
        t = re.match(r"transformer_blocks\.(\d+)\.", rest)
        if sub == 1 and t:
            depth[block] = max(depth.get(block, 0), int(t[1]) + 1)
        if sub == 1 and rest == "proj_in.weight" and linear is None:
            linear = len(h.tensors[UNET_PREFIX + k].shape) == 2
    adm = h.shape(UNET_PREFIX + "label_emb.0.0.weight")
    return UNetLayout(
        in_channels=conv_in[1] if conv_in and len(conv_in) == 4 else -1,
        depths=tuple(depth.get(b, 0) for b in sorted(res_blocks)),
        adm_in=adm[1] if adm else None,
        linear_proj=linear,
        text_encoders=_text_encoder_layout(h),
    )


def _text_encoder_layout(h: Header) -> str | None:
    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in h.tensors)

    if has(SDXL_CLIP_G_PREFIX):
        return "sdxl"
    if has(REFINER_CLIP_G_PREFIX):
        return "sdxl-refiner"
    if has(SD1_CLIP_PREFIX):
        return "clip-l"
    if has(SD2_CLIP_PREFIX):
        return "open-clip"
    return None


def _not_a_checkpoint(h: Header) -> str:
    keys = list(h.tensors)
    if not keys:
        return "the file holds no tensors"
    if any("lora_down" in k or "lora_A" in k or k.startswith("lora_") or ".hada_" in k or "lokr_" in k for k in keys):
        return "this is a LoRA, not a checkpoint (it belongs in models/Lora)"
    if any(k.startswith("control_model.") or k.startswith("controlnet_") for k in keys):
        return "this is a ControlNet, not a checkpoint (it belongs in models/ControlNet)"
    if any(k.startswith(("encoder.down", "decoder.up", VAE_PREFIX)) for k in keys) and not any(
        k.startswith("cond_stage_model") for k in keys
    ):
        return "this is a VAE, not a checkpoint (it belongs in models/VAE)"
    if any(k.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for k in keys):
        return "a diffusers-format UNet file, not a full checkpoint (use a diffusers folder or an A1111 single file)"
    return f"no Stable Diffusion UNet weights ({UNET_PREFIX}*) among its {len(keys)} tensors"


def structural_family(h: Header) -> tuple[str, str]:
    """(family or "unknown", reason) from structure only."""
    u = unet_layout(h)
    if u is None:
        return "unknown", _not_a_checkpoint(h)
    shape = f"in_channels={u.in_channels}, transformer depths {list(u.depths)}"
    if u.adm_in is not None and (u.text_encoders in ("sdxl", "sdxl-refiner") or u.depths in (REFINER_DEPTHS, *SDXL_DEPTHS)):
        if u.text_encoders == "sdxl-refiner" or u.depths == REFINER_DEPTHS:
            if u.in_channels == 4 and u.depths == REFINER_DEPTHS:
                return "sdxl-refiner", f"SDXL refiner layout ({shape})"
            return "unknown", f"SDXL-refiner-like model with an unexpected UNet ({shape})"
        name = SDXL_DEPTHS.get(u.depths)
        if name is None:
            return "unknown", f"SDXL-like model with an unknown UNet depth pattern ({shape})"
        if u.in_channels == 9 and name == "sdxl-base":
            return "sdxl-inpaint", f"SDXL inpainting layout ({shape})"
        if u.in_channels == 4:
            return name, f"{name} layout ({shape})"
        return "unknown", f"{name}-like UNet with {u.in_channels} input channels is not supported"
    if u.adm_in is not None:
        return "unknown", f"a class-conditioned UNet (label_emb width {u.adm_in}; SD 2.x unCLIP?) is not supported"
    if u.depths != SD_DEPTHS:
        return "unknown", f"UNet depth pattern does not match SD 1.x/2.x ({shape})"
    if u.text_encoders == "clip-l" or (u.text_encoders is None and u.linear_proj is False):
        arch = "sd1"
    elif u.text_encoders == "open-clip" or (u.text_encoders is None and u.linear_proj):
        arch = "sd2"
    else:
        return "unknown", f"SD-like UNet with an unrecognised text encoder layout ({u.text_encoders})"
    why = f"{'CLIP-L' if arch == 'sd1' else 'OpenCLIP'} text encoder, {'conv' if arch == 'sd1' else 'linear'} projections"
    if u.in_channels == 4:
        return arch, f"{arch} layout ({why})"
    if u.in_channels == 9:
        return f"{arch}-inpaint", f"{arch} inpainting layout ({why}, 9 input channels)"
    return "unknown", f"{arch}-like UNet with {u.in_channels} input channels (instruct-pix2pix/upscaler?) is not supported"


def read_override(path: Path) -> dict:
    """User hints in `<name>.json` beside the file: {"family", "prediction", "variant"} (other keys ignored)."""
    side = path.with_suffix(".json") if path.is_file() else path / "easel.json"
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: doc[k] for k in ("family", "prediction", "variant") if isinstance(doc, dict) and isinstance(doc.get(k), str)}


def _normalise_prediction(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("v", "v_prediction", "v-prediction", "true"):
        return "v"
    if v in ("eps", "epsilon", "false"):
        return "eps"
    return None


def prediction_hint(h: Header, path: Path) -> tuple[str, str] | None:
    """(prediction, source) from the file's sidecars and metadata, or None."""
    yaml_path = path.with_suffix(".yaml")
    if yaml_path.is_file():
        text = yaml_path.read_text(encoding="utf-8", errors="replace")
        m = re.search(r"parameterization:\s*[\"']?(\w+)", text)
        return ("v" if m and m[1] == "v" else "eps"), f"sidecar {yaml_path.name}"
    for key in ("modelspec.prediction_type", "ss_v_parameterization", "prediction_type"):
        if key in h.metadata and (p := _normalise_prediction(h.metadata[key])):
            return p, f"metadata {key}"
    if "v_pred" in h.tensors:
        return "v", "v_pred marker key"
    return None


def variant_hint(h: Header, path: Path) -> str | None:
    text = " ".join([path.name, h.metadata.get("modelspec.title", ""), h.metadata.get("modelspec.architecture", "")]).lower()
    return next((v for v in VARIANTS if v in text), None)


def detect(h: Header, path: Path | None = None) -> Detection:
    path = Path(path or h.path)
    name, reason = structural_family(h)
    override = read_override(path)
    if override.get("family") in FAMILIES:
        name, reason = override["family"], f"family set in {path.with_suffix('.json').name} (structure said: {reason})"
    if name not in FAMILIES:
        return Detection(name, reason=reason)
    det = Detection(name, FAMILIES[name].default_prediction, None, reason)
    hint = prediction_hint(h, path)
    if over := _normalise_prediction(override.get("prediction", "")):
        det = replace(det, prediction=over, reason=f"{reason}; prediction from {path.with_suffix('.json').name}")
    elif hint:
        det = replace(det, prediction=hint[0], reason=f"{reason}; prediction from {hint[1]}")
    elif name == "sd2":
        det = replace(det, reason=f"{reason}; prediction guessed 'v' (SD 2.x 768; add <name>.json or .yaml to override)")
    if name == "sdxl-base":
        variant = override.get("variant") if override.get("variant") in VARIANTS else variant_hint(h, path)
        det = replace(det, variant=variant)
    return det
