"""LoRA files for the tiny test models, written the way each trainer names them: kohya with LDM block
names or diffusers names, PEFT/diffusers, LyCORIS LoHa / LoKr / Tucker LoCon, kohya DoRA. Random
weights large enough to change a 64x64 picture visibly."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from webui.models.convert.unet import UNetPlan

UNET_SUFFIXES = ("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "proj_in", "ff.net.2")
TE_SUFFIXES = ("self_attn.q_proj", "self_attn.v_proj", "mlp.fc1")


def unet_modules(pipe, suffixes=UNET_SUFFIXES, convs: bool = False):
    """(diffusers path, module) of the UNet layers a LoRA usually trains (resnet convs for LoCon)."""
    for name, module in pipe.unet.named_modules():
        if name.endswith(suffixes) and isinstance(module, (nn.Linear, nn.Conv2d)):
            yield name, module
        elif convs and name.endswith(("resnets.0.conv1", "resnets.0.conv2")):
            yield name, module


def te_modules(pipe, component: str = "text_encoder"):
    for name, module in getattr(pipe, component).named_modules():
        if name.endswith(TE_SUFFIXES):
            yield name, module


def kohya_unet_name(pipe, path: str, naming: str) -> str:
    if naming == "ldm":
        path = UNetPlan.from_config(pipe.unet.config).key(path + ".weight").removesuffix(".weight")
    return "lora_unet_" + path.replace(".", "_")


def kohya_te_name(path: str, prefix: str) -> str:
    full = path if path.startswith("text_model.") else "text_model." + path
    return prefix + full.replace(".", "_")


def _shape(module) -> tuple[int, int, tuple[int, ...]]:
    w = module.weight
    return w.shape[0], w.shape[1], tuple(w.shape[2:])


def _pair(gen, module, rank: int, scale: float):
    out, inp, kernel = _shape(module)
    down = torch.randn(rank, inp, *kernel, generator=gen) * scale
    up = torch.randn(out, rank, *([1, 1] if kernel else []), generator=gen) * scale
    return down, up


def _te_prefixes(pipe) -> dict[str, str]:
    if getattr(pipe, "text_encoder_2", None) is not None:
        return {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    return {"text_encoder": "lora_te_"}


def kohya(pipe, naming: str = "ldm", *, rank: int = 4, scale: float = 0.6, seed: int = 0, unet: bool = True,
          te: bool = True, convs: bool = False, dora: bool = False, alpha: float | None = 2.0) -> dict:
    """A kohya LoRA (`lora_down`/`lora_up`/`alpha`); `convs`: LoCon resnet convs; `dora`: with `dora_scale`."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def add(name, module):
        down, up = _pair(gen, module, rank, scale)
        sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"] = down, up
        if alpha is not None:
            sd[f"{name}.alpha"] = torch.tensor(alpha)
        if dora:  # A1111's layout: one magnitude per input column
            w = module.weight.detach()
            sd[f"{name}.dora_scale"] = w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1)[None] * 1.5

    if unet:
        for path, module in unet_modules(pipe, convs=convs):
            add(kohya_unet_name(pipe, path, naming), module)
    if te:
        for component, prefix in _te_prefixes(pipe).items():
            for path, module in te_modules(pipe, component):
                add(kohya_te_name(path, prefix), module)
    return sd


def peft(pipe, *, rank: int = 4, scale: float = 0.6, seed: int = 0) -> dict:
    """diffusers/PEFT names: `unet.<path>.lora_A.weight`, `text_encoder.text_model.<path>.lora_B.weight`."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for path, module in unet_modules(pipe):
        sd[f"unet.{path}.lora_A.weight"], sd[f"unet.{path}.lora_B.weight"] = _pair(gen, module, rank, scale)
    for path, module in te_modules(pipe):
        full = path if path.startswith("text_model.") else "text_model." + path
        down, up = _pair(gen, module, rank, scale)
        sd[f"text_encoder.{full}.lora_A.weight"], sd[f"text_encoder.{full}.lora_B.weight"] = down, up
    return sd


def lycoris(pipe, algo: str, *, rank: int = 4, scale: float = 0.6, seed: int = 0, naming: str = "ldm") -> dict:
    """LoHa (`hada_w1_a`...) or LoKr (`lokr_w1` + factored `lokr_w2_a/b`) on the UNet and text encoder."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def add(name, module):
        out, inp, _ = _shape(module)
        if algo == "loha":
            for n in (1, 2):
                sd[f"{name}.hada_w{n}_a"] = torch.randn(out, rank, generator=gen) * scale
                sd[f"{name}.hada_w{n}_b"] = torch.randn(rank, inp, generator=gen) * scale
        else:  # LoKr: out = a*c, in = b*d with a small whole w1 and a low-rank w2
            a, b = 2, 2
            sd[f"{name}.lokr_w1"] = torch.randn(a, b, generator=gen) * scale
            sd[f"{name}.lokr_w2_a"] = torch.randn(out // a, rank, generator=gen) * scale
            sd[f"{name}.lokr_w2_b"] = torch.randn(rank, inp // b, generator=gen) * scale
        sd[f"{name}.alpha"] = torch.tensor(float(rank))

    for path, module in unet_modules(pipe, suffixes=UNET_SUFFIXES[:-2]):  # linear layers only
        add(kohya_unet_name(pipe, path, naming), module)
    for component, prefix in _te_prefixes(pipe).items():
        for path, module in te_modules(pipe, component):
            add(kohya_te_name(path, prefix), module)
    return sd


def write(folder: Path, name: str, tensors: dict, metadata: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path
