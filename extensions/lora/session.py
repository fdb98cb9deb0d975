"""One job's LoRA stack switched on over a model's shared modules, and undone exactly afterwards.

`StackSession.apply` calls `set_adapters` with the stack's weights, adds the LyCORIS/DoRA patches and,
with the `lora_fuse` setting, folds everything into the weights. `undo` puts every module back: disabled
PEFT adapters leave the base layer's output untouched, and a weight changed for the job ran on a new
tensor while its original waited aside to be put back, so the next job without LoRAs runs the base
model bit for bit.

A fused stack's weights are kept per model (`FusedStack`) after the job, beside the originals: the next
job with the same files and weights swaps them in again instead of recomputing them (the GEMMs are most
of a fused job's set-up). A1111 keeps a backup of each patched layer the same way."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from extensions.lora import combined
from extensions.lora.adapters import LoadedLora, ModelLoras, tuner_layers
from extensions.lora.patches import WeightPatch
from extensions.lora.targets import base_layer


@dataclass
class Active:
    """One file of the job's stack with its weights."""

    loaded: LoadedLora
    te: float
    unet: float

    def weight(self, component: str) -> float:
        return self.unet if component == "unet" else self.te


@dataclass
class FusedStack:
    """The weights one fused stack gave, kept for the next job with the same stack. `weights`: each changed
    parameter with the original tensor it was computed from and the fused tensor."""

    key: tuple
    weights: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]]

    def current(self) -> bool:
        """Still computed from the tensors the model holds (not after a move to another device)."""
        return all(p.data.data_ptr() == o.data_ptr() and p.device == o.device for p, o, _ in self.weights)


def stack_key(stack: list[Active]) -> tuple:
    return tuple((a.loaded.ident, a.te, a.unet) for a in stack)


def drop_stale_fused(states: list[ModelLoras]) -> None:
    """Forget fused weights a model no longer computes from (moved to RAM or another device since), so they
    do not hold device memory; called before each job."""
    for state in states:
        if state.fused is not None and not state.fused.current():
            state.fused = None


class StackSession:
    """One job's stack switched on over the shared modules; `undo()` puts them back exactly."""

    def __init__(self, pipeline, state: ModelLoras):
        self.pipeline, self.state = pipeline, state
        self.patch = WeightPatch()
        self.adapters_set = False

    def apply(self, stack: list[Active], fuse: bool) -> None:
        if fuse and self._reuse_fused(stack_key(stack)):
            return
        if fuse:
            self.state.fused = None  # another stack: its copy goes before this one is computed
        adapters = [a for a in stack if a.loaded.adapter]
        if adapters:
            self.adapters_set = True
            if len(adapters) > 1 and not fuse:  # one pass per layer instead of one per file (combined.py)
                stack_adapter = combined.activate(self.pipeline, self.state, adapters)
                self.pipeline.set_adapters([stack_adapter.name], adapter_weights=[
                    dict.fromkeys(stack_adapter.components, 1.0)])
                _enable(self.pipeline, True)
            else:
                names = [a.loaded.adapter for a in adapters]
                self.pipeline.set_adapters(names, adapter_weights=[
                    {c: a.weight(c) for c in a.loaded.components} for a in adapters])
                if fuse:
                    self._fuse(names)
                else:
                    _enable(self.pipeline, True)
        for active in stack:
            for layer in active.loaded.patches:
                multiplier = active.weight(layer.target.component)
                if multiplier:
                    weight = self.state.table.weight(layer.target)
                    self.patch.add(weight, layer.delta(weight, multiplier))
        if fuse:
            self.state.fused = FusedStack(stack_key(stack), [(p, o, p.data) for p, o in self.patch.saved.values()])

    def _reuse_fused(self, key: tuple) -> bool:
        fused = self.state.fused
        if fused is None or fused.key != key or not fused.current():
            return False
        _enable(self.pipeline, False)  # as after _fuse: the adapters' part is in the weights
        for param, _, value in fused.weights:
            self.patch.replace(param, value)
        return True

    def _fuse(self, names: list[str]) -> None:
        """Fold the weighted adapters into the weights for this job and leave the adapters off, so a step
        costs what a base step costs. PEFT's merge/unmerge would subtract the delta again afterwards (float
        rounding: not the base bit for bit) and compute it twice, one GEMM per adapter; here one GEMM per
        layer writes W + sum(s_i B_i A_i) into a new tensor and the original is kept aside."""
        _enable(self.pipeline, False)
        for layer in tuner_layers(self.pipeline):
            mine = [n for n in names if n in layer.lora_A]
            if mine:
                weight = base_layer(layer).weight
                self.patch.replace(weight, _fused(weight, layer, mine))

    def undo(self) -> None:
        """Every step is tried even if one fails; the first failure is raised at the end."""
        errors: list[BaseException] = []
        steps = [self.patch.restore]
        if self.adapters_set:
            steps.append(lambda: _enable(self.pipeline, False))
        for step in steps:
            try:
                step()
            except Exception as e:
                errors.append(e)
        if errors:
            self.state.unfinished = self
            self.state.fused = None
            raise errors[0]
        self.adapters_set = False
        if self.state.unfinished is self:
            self.state.unfinished = None


def _fused(weight: torch.Tensor, layer, names: list[str]) -> torch.Tensor:
    """W + sum_i scale_i * B_i @ A_i for a PEFT Linear or Conv2d LoRA layer (B is 1x1 for convs), in one GEMM."""
    work = torch.float32 if weight.device.type == "cpu" and weight.dtype in (torch.float16, torch.bfloat16) \
        else weight.dtype
    with torch.no_grad():
        down = torch.cat([layer.lora_A[n].weight.flatten(1) for n in names]).to(work)
        up = torch.cat([layer.lora_B[n].weight.flatten(1) * layer.scaling[n] for n in names], dim=1).to(work)
        return torch.addmm(weight.detach().flatten(1).to(work), up, down).view(weight.shape).to(weight.dtype)


def _enable(pipeline, on: bool) -> None:
    for layer in tuner_layers(pipeline):
        layer.enable_adapters(on)
