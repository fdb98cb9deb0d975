"""Which module of a loaded model each name in a LoRA file means, by exact lookup rather than string
surgery: every Linear/Conv2d of the UNet and text encoders is listed under each name a file may use for
it (kohya's underscored diffusers path, kohya's underscored LDM path, the PEFT dotted path). So
`lora_unet_input_blocks_1_1_proj_in`, `lora_unet_down_blocks_0_attentions_0_proj_in` and
`unet.down_blocks.0.attentions.0.proj_in` all land on the same module, and a name the model does not
have is reported instead of silently dropped.

diffusers 0.42 cannot load kohya files with LDM names on SD1, and drops DoRA scales with only a log
warning; converting to PEFT names here and handing diffusers a PEFT state dict avoids both."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from extensions.lora.layout import Layout, Module
from webui.models.convert.unet import UNetPlan

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


class LayoutMismatch(ValueError):
    """The file names modules this model does not have, or shapes that do not fit them."""


@dataclass(frozen=True)
class Target:
    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    path: str  # the module's path inside that component, as the module tree has it


def _weight_modules(root: nn.Module, prefix: str = ""):
    """Linear/Conv2d modules by path; a PEFT-wrapped one under its own path (not `.base_layer`)."""
    for name, child in root.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, (BaseTunerLayer, nn.Linear, nn.Conv2d)):
            yield path, child
        else:
            yield from _weight_modules(child, path + ".")


def base_layer(module: nn.Module) -> nn.Module:
    return module.get_base_layer() if isinstance(module, BaseTunerLayer) else module


class ModuleTable:
    """Every name a LoRA file may use for a module of this pipeline -> where it is."""

    def __init__(self, pipeline):
        self.names: dict[str, Target] = {}
        self.modules: dict[Target, nn.Module] = {}
        unet = pipeline.unet
        plan = UNetPlan.from_config(unet.config)
        for path, module in _weight_modules(unet):
            target = self._add(Target("unet", path), module, "lora_unet_" + path.replace(".", "_"), "unet." + path)
            try:
                ldm = plan.key(path + ".weight").removesuffix(".weight")
            except KeyError:
                continue
            self.names.setdefault("lora_unet_" + ldm.replace(".", "_"), target)
        encoders = [c for c in TEXT_ENCODERS if getattr(pipeline, c, None) is not None]
        kohya = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"} if len(encoders) == 2 else \
            {"text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}
        for component in encoders:
            for path, module in _weight_modules(getattr(pipeline, component)):
                full = path if path.startswith("text_model.") or path == "text_projection" else "text_model." + path
                self._add(Target(component, path), module, kohya[component] + full.replace(".", "_"),
                          f"{component}.{path}", f"{component}.{full}")

    def _add(self, target: Target, module: nn.Module, *names: str) -> Target:
        self.modules[target] = module
        for name in names:
            self.names.setdefault(name, target)
        return target

    def find(self, name: str) -> Target | None:
        return self.names.get(name)

    def weight(self, target: Target) -> torch.nn.Parameter:
        return base_layer(self.modules[target]).weight


def resolve(layout: Layout, table: ModuleTable) -> dict[str, Target]:
    """Module name in the file -> target, checking every module exists and its shapes fit."""
    out: dict[str, Target] = {}
    missing = [m.name for m in layout.modules if table.find(m.name) is None]
    if missing:
        raise LayoutMismatch(f"{len(missing)} of its {len(layout.modules)} modules are not in this model "
                             f"(e.g. {missing[0]!r})")
    for m in layout.modules:
        target = table.find(m.name)
        shape = tuple(table.weight(target).shape)
        problem = _shape_problem(m, shape)
        if problem:
            raise LayoutMismatch(f"module {m.name!r} does not fit this model: {problem}")
        out[m.name] = target
    return out


def _shape_problem(m: Module, weight: tuple[int, ...]) -> str | None:
    t = m.tensors
    down = t.get("lora_down.weight") or t.get("lora_A.weight")
    up = t.get("lora_up.weight") or t.get("lora_B.weight")
    if down is None or up is None:
        return None  # LyCORIS layers are checked when their delta is built
    if up[0] != weight[0] or down[1] != weight[1] or up[1] != down[0]:
        return f"LoRA {tuple(up)} x {tuple(down)} against weight {weight}"
    if len(weight) == 4 and "lora_mid.weight" not in t and tuple(down[2:]) != weight[2:]:
        return f"kernel {tuple(down[2:])} against {weight[2:]}"
    return None


def _metadata_alphas(metadata: dict[str, str]) -> dict[str, tuple[float | None, dict]]:
    """diffusers' `lora_adapter_metadata`: component -> (lora_alpha, alpha_pattern)."""
    try:
        doc = json.loads(metadata.get("lora_adapter_metadata", "") or "{}")
    except ValueError:
        return {}
    out: dict[str, tuple[float | None, dict]] = {}
    for component in ("unet", *TEXT_ENCODERS):
        alpha = doc.get(f"{component}.lora_alpha")
        pattern = doc.get(f"{component}.alpha_pattern") or {}
        if alpha is not None or pattern:
            out[component] = (alpha, pattern if isinstance(pattern, dict) else {})
    return out


def peft_state_dict(tensors: dict[str, torch.Tensor], layout: Layout, targets: dict[str, Target],
                    metadata: dict[str, str]) -> dict[str, torch.Tensor]:
    """A PEFT-named state dict diffusers loads as is, with each module's alpha/rank folded into lora_B
    (diffusers then uses scale 1, which keeps one adapter config per file whatever its alphas)."""
    alphas = _metadata_alphas(metadata)
    out: dict[str, torch.Tensor] = {}
    for m in layout.modules:
        target = targets[m.name]
        peft = "lora_A.weight" in m.tensors
        down = tensors[f"{m.name}.{'lora_A.weight' if peft else 'lora_down.weight'}"]
        up = tensors[f"{m.name}.{'lora_B.weight' if peft else 'lora_up.weight'}"]
        alpha = tensors.get(f"{m.name}.alpha")
        if alpha is not None:
            alpha = float(alpha)
        elif peft and target.component in alphas:
            default, pattern = alphas[target.component]
            alpha = next((float(v) for k, v in pattern.items() if target.path.endswith(k)), default)
        scale = 1.0 if alpha is None else alpha / down.shape[0]
        key = f"{target.component}.{target.path}"
        out[f"{key}.lora_A.weight"] = down
        out[f"{key}.lora_B.weight"] = up if scale == 1.0 else (up.float() * scale).to(up.dtype)
    return out
