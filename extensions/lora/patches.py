"""Weight deltas for what diffusers cannot load as an adapter: LyCORIS LoHa, LoKr, Tucker LoCon
(`lora_mid`), full differences, and DoRA (kohya/LyCORIS `dora_scale`, which diffusers 0.42 drops with
only a log warning). The formulas are A1111's (`extensions-builtin/Lora/network_*.py`), so a file
gives the picture it gives there.

A `WeightPatch` adds the deltas to the shared weights for one job and copies the original tensors
of the patched layers back afterwards, so the model returns bit for bit to what it was."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from extensions.lora.layout import Module
from extensions.lora.targets import Target


@dataclass(frozen=True)
class PatchLayer:
    """One module's LyCORIS/DoRA tensors (float32, CPU) and the module they change."""

    name: str
    target: Target
    tensors: dict[str, torch.Tensor]

    def delta(self, weight: torch.Tensor, multiplier: float) -> torch.Tensor:
        """The change to `weight` (float32) at this multiplier; ValueError when the shapes do not fit."""
        t = self.tensors
        orig = weight.detach().float()
        if "diff" in t:
            updown, dim = t["diff"], None
        elif "hada_w1_a" in t:
            updown, dim = _loha(t), t["hada_w1_b"].shape[0]
        elif "lokr_w1" in t or "lokr_w1_a" in t:
            updown, dim = _lokr(t, orig.shape)
        else:
            updown, dim = _lora(t), t["lora_down.weight"].shape[0]
        if updown.numel() != orig.numel():
            raise ValueError(f"{self.name}: a {tuple(updown.shape)} change does not fit the weight {tuple(orig.shape)}")
        updown = updown.reshape(orig.shape)
        if "alpha" in t and dim:
            updown = updown * (float(t["alpha"]) / dim)
        if "dora_scale" in t:
            updown = _decompose(updown, orig, t["dora_scale"])
        return updown * multiplier


def _lora(t: dict[str, torch.Tensor]) -> torch.Tensor:
    up, down = t["lora_up.weight"], t["lora_down.weight"]
    if "lora_mid.weight" in t:  # Tucker: (out, r) x (r, r, kh, kw) x (r, in)
        return torch.einsum("n m k l, i n, m j -> i j k l", t["lora_mid.weight"], up.flatten(1), down.flatten(1))
    out = up.flatten(1) @ down.flatten(1)
    return out.reshape(up.shape[0], *down.shape[1:]) if down.dim() == 4 else out


def _cp(core: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """LyCORIS' CP/Tucker rebuild (A1111 lyco_helpers.make_weight_cp)."""
    temp = torch.einsum("i j k l, j r -> i r k l", core, wb)
    return torch.einsum("i j k l, i r -> r j k l", temp, wa)


def _hada_half(t: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    a, b = t[f"hada_w{n}_a"], t[f"hada_w{n}_b"]
    if f"hada_t{n}" in t:
        return _cp(t[f"hada_t{n}"], a, b)
    out = a.flatten(1) @ b.flatten(1)
    return out.reshape(a.shape[0], *b.shape[1:]) if b.dim() == 4 else out


def _loha(t: dict[str, torch.Tensor]) -> torch.Tensor:
    """LoHa: the Hadamard product of two low-rank products."""
    return _hada_half(t, 1) * _hada_half(t, 2)


def _lokr(t: dict[str, torch.Tensor], shape: torch.Size) -> tuple[torch.Tensor, int | None]:
    """LoKr: the Kronecker product of two factors, each given whole or as a low-rank (or Tucker) product."""
    dim = None
    w1 = t.get("lokr_w1")
    if w1 is None:
        w1, dim = t["lokr_w1_a"] @ t["lokr_w1_b"], t["lokr_w1_b"].shape[0]
    w2 = t.get("lokr_w2")
    if w2 is None:
        a, b = t["lokr_w2_a"], t["lokr_w2_b"]
        w2 = _cp(t["lokr_t2"], a, b) if "lokr_t2" in t else (a.flatten(1) @ b.flatten(1)).reshape(a.shape[0], *b.shape[1:])
        dim = b.shape[0]
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2.contiguous()), dim


def _decompose(updown: torch.Tensor, orig: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """DoRA: rescale (W + dW) to the trained magnitudes, per input column (A1111's layout, scale of shape
    (1, in)) or per output row (LyCORIS `wd_on_out`, scale of shape (out, 1))."""
    merged = orig + updown
    if scale.shape[0] == 1 and scale.numel() > 1:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1)
        norm = norm.reshape(1, -1, *[1] * (merged.dim() - 2))
    else:
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (merged.dim() - 1))
    return merged * (scale.reshape(norm.shape) / norm) - orig


def patch_layers(tensors: dict[str, torch.Tensor], modules: tuple[Module, ...],
                 targets: dict[str, Target]) -> list[PatchLayer]:
    """The file's modules as patch layers (`targets`: module name in the file -> module in the model)."""
    return [PatchLayer(m.name, targets[m.name],
                       {s: tensors[f"{m.name}.{s}"].float() for s in m.tensors}) for m in modules]


@dataclass
class WeightPatch:
    """Deltas on shared weights for one job. The patched weight gets a new tensor (original + delta) and
    keeps the original aside, so `restore` is a pointer swap: exact, and no copy of the layer either way
    (nor a write into memory-mapped checkpoint pages)."""

    saved: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = field(default_factory=dict)

    def add(self, weight: torch.nn.Parameter, delta: torch.Tensor) -> None:
        delta = delta.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            if id(weight) in self.saved:
                weight.data.add_(delta)  # already this job's own copy
            else:
                self.saved[id(weight)] = (weight, weight.data)
                weight.data = weight.data + delta

    def replace(self, weight: torch.nn.Parameter, value: torch.Tensor) -> None:
        """Give `weight` a new tensor for the job (the first change of this weight)."""
        assert id(weight) not in self.saved, "replace() is for a weight's first change"
        self.saved[id(weight)] = (weight, weight.data)
        weight.data = value

    def restore(self) -> None:
        for weight, original in self.saved.values():
            weight.data = original
        self.saved.clear()
