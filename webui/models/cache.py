"""Loaded pipelines kept in RAM under a budget, the most recently used on the device.

Like ComfyUI's model management: switching back to a cached model costs a dictionary lookup (and a
move to the GPU); going over the RAM budget evicts the least recently used model and gives its
memory back. On CUDA, `--medvram`/`--lowvram` map to diffusers' model / sequential CPU offload."""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Hashable

from webui.models.memory import pipeline_bytes, release_freed_memory, total_ram

log = logging.getLogger(__name__)


@dataclass
class CachedModel:
    key: Hashable
    pipeline: Any
    nbytes: int
    on_device: bool = False
    info: dict = field(default_factory=dict)


class ModelCache:
    def __init__(self, ram_budget: int = 0, device: str = "cpu", offload: str = "none", vram_budget: int = 0,
                 on_evict: Callable[[CachedModel], None] | None = None):
        """`on_evict(model)` runs before a model's pipeline is dropped (the manager tells extensions)."""
        self.on_evict = on_evict
        self._pins: Counter = Counter()
        self.ram_budget = ram_budget or total_ram() // 2
        self.device = device
        self.offload = offload
        self.vram_budget = vram_budget
        self._models: OrderedDict[Hashable, CachedModel] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)

    @property
    def total_bytes(self) -> int:
        return sum(m.nbytes for m in self._models.values())

    def keys(self) -> list[Hashable]:
        return list(self._models)

    def get(self, key: Hashable) -> CachedModel | None:
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            self._place(model)
        return model

    def put(self, key: Hashable, pipeline: Any, **info) -> CachedModel:
        model = CachedModel(key, pipeline, pipeline_bytes(pipeline), info=info)
        self._models[key] = model
        self._models.move_to_end(key)
        self._evict_over_budget(keep=key)
        self._place(model)
        return model

    @contextmanager
    def pinned(self, key: Hashable) -> Iterator[None]:
        """Keep `key` loaded while a job uses it: budget eviction skips pinned models (the budget may be
        exceeded for the job's duration, rather than unloading weights still in use and reloading them)."""
        self._pins[key] += 1
        try:
            yield
        finally:
            self._pins[key] -= 1
            if self._pins[key] <= 0:
                del self._pins[key]

    def make_room(self, nbytes: int) -> None:
        """Evict least recently used models until `nbytes` more fit, before loading (no double peak)."""
        for key in list(self._models):
            if self.total_bytes + nbytes <= self.ram_budget:
                break
            if key not in self._pins:
                self.evict(key)

    def evict(self, key: Hashable) -> None:
        model = self._models.pop(key, None)
        if model is None:
            return
        log.info("unloading %s (%.0f MB)", key, model.nbytes / 2**20)
        if self.on_evict is not None:
            try:
                self.on_evict(model)
            except Exception:  # a listener's bug must not keep the memory pinned
                log.exception("while unloading %s", key)
        model.pipeline = None
        del model
        release_freed_memory()

    def clear(self) -> None:
        for key in list(self._models):
            self.evict(key)

    def _evict_over_budget(self, keep: Hashable) -> None:
        for key in list(self._models):
            if self.total_bytes <= self.ram_budget:
                break
            if key != keep and key not in self._pins:
                self.evict(key)

    def _place(self, model: CachedModel) -> None:
        """Put `model` on the device; on CUDA, move others back to RAM to stay in the VRAM budget."""
        if self.device == "cpu" or model.on_device:
            return
        if self.offload == "model":
            model.pipeline.enable_model_cpu_offload(device=self.device)
        elif self.offload == "sequential":
            model.pipeline.enable_sequential_cpu_offload(device=self.device)
        else:
            budget = self.vram_budget or None
            for other in self._models.values():
                if other is not model and other.on_device and (budget is None or self._vram_used() + model.nbytes > budget):
                    other.pipeline.to("cpu")
                    other.on_device = False
            model.pipeline.to(self.device)
        model.on_device = True
        release_freed_memory()

    def _vram_used(self) -> int:
        return sum(m.nbytes for m in self._models.values() if m.on_device)
