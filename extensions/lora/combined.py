"""Several LoRAs run unfused as one adapter.

PEFT runs each active adapter of a layer on its own: two thin matmuls, a scale and an add over the layer's
whole output, per adapter. With three LoRAs that elementwise work, three passes over every patched layer's
output, costs more on a CPU than the matmuls (bench/lora.py: three rank-32 LoRAs ran at 0.77-0.85 of the
base speed where their arithmetic allows 0.91). So a stack of several files runs as one adapter of their
summed rank, A = [A_1; A_2; ...] and B = [w_1 s_1 B_1, w_2 s_2 B_2, ...], which computes the same
sum_i w_i s_i B_i A_i x in one pass.

The combined adapter is loaded once per set of files (`load_lora_weights`, as a file is) and kept while that
set is in use; a change of weights only rewrites its B blocks in place, so it stays well under a step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer

from extensions.lora import adapters
from extensions.lora.adapters import ModelLoras


@dataclass(frozen=True)
class Block:
    """One file's columns in a combined layer's B (and rows in its A)."""

    source: str  # the file's adapter
    component: str
    start: int
    rank: int


@dataclass
class CombinedLayer:
    module: LoraLayer
    blocks: list[Block]


@dataclass
class CombinedStack:
    key: tuple[int, ...]  # the files' `LoadedLora.ident`, sorted
    name: str  # its adapter's name
    components: frozenset[str]
    layers: list[CombinedLayer]
    weights: tuple | None = None  # the weights its B blocks hold

    def set_weights(self, weights: dict[str, dict[str, float]]) -> None:
        """Write w * s_i * B_i into each file's block (`weights`: adapter -> component -> weight)."""
        key = tuple(sorted((n, tuple(sorted(w.items()))) for n, w in weights.items()))
        if key == self.weights:
            return
        with torch.no_grad():
            for layer in self.layers:
                target = layer.module.lora_B[self.name].weight
                own = _scale(layer.module, self.name)
                for b in layer.blocks:
                    factor = weights[b.source].get(b.component, 0.0) * _scale(layer.module, b.source) / own
                    target[:, b.start:b.start + b.rank] = layer.module.lora_B[b.source].weight * factor
        self.weights = key


def activate(pipeline, state: ModelLoras, stack: list) -> CombinedStack:
    """The stack's files (`session.Active`, each a PEFT adapter) as one adapter with their weights, loaded
    unless the last combined stack has the same files."""
    stack = sorted(stack, key=lambda a: a.loaded.ident)  # the same files in another order: the same adapter
    key = tuple(a.loaded.ident for a in stack)
    combined = state.combined
    if combined is None or combined.key != key:
        if combined is not None:
            adapters.delete_adapter(pipeline, combined.name)
            state.combined = None
        combined = state.combined = _load(pipeline, state, key, [a.loaded.adapter for a in stack])
    combined.set_weights({a.loaded.adapter: {c: a.weight(c) for c in a.loaded.components} for a in stack})
    return combined


def _load(pipeline, state: ModelLoras, key: tuple[int, ...], names: list[str]) -> CombinedStack:
    state_dict: dict[str, torch.Tensor] = {}
    plan: list[tuple[str, str, list[Block]]] = []
    with torch.no_grad():
        for component, model in adapters.components(pipeline):
            for path, module in model.named_modules():
                present = [n for n in names if isinstance(module, LoraLayer) and n in module.lora_A]
                if not present:
                    continue
                blocks, start = [], 0
                for n in present:
                    rank = module.lora_A[n].weight.shape[0]
                    blocks.append(Block(n, component, start, rank))
                    start += rank
                state_dict[f"{component}.{path}.lora_A.weight"] = torch.cat([module.lora_A[n].weight for n in present])
                state_dict[f"{component}.{path}.lora_B.weight"] = torch.cat(
                    [torch.zeros_like(module.lora_B[n].weight) for n in present], dim=1)  # set_weights fills it
                plan.append((component, path, blocks))
    name = adapters.new_name(pipeline, state, prefix="stack")
    with adapters.quiet():
        pipeline.load_lora_weights(state_dict, adapter_name=name)
    models = dict(adapters.components(pipeline))
    layers = [CombinedLayer(models[component].get_submodule(path), blocks) for component, path, blocks in plan]
    return CombinedStack(key, name, frozenset(c for c, _, _ in plan), layers)


def _scale(module: LoraLayer, adapter: str) -> float:
    """The adapter's own scale in this layer (alpha / rank), without the weight `set_adapters` multiplies in."""
    return module.lora_alpha[adapter] / module.r[adapter]
