"""LoRAs on a loaded model. Each file is loaded once per model and kept: plain LoRA/LoCon as a diffusers
(PEFT) adapter on the shared UNet and text encoders, LyCORIS/DoRA as tensors ready to patch. A job's
stack is then only switched on around the job (`StackSession`): `set_adapters` with its weights, the
patches added, optionally everything fused, and all of it undone afterwards, so the next job without
LoRAs runs the base model bit for bit and no job ever reloads the base weights.

Undo is exact: disabled PEFT adapters leave the base layer's output untouched, and a weight changed for
the job (fused adapters, patches) ran on a new tensor while its original waited aside to be put back."""

from __future__ import annotations

import logging
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open

from extensions.lora.layout import describe
from extensions.lora.library import LoraEntry
from extensions.lora.patches import PatchLayer, WeightPatch, patch_layers
from extensions.lora.targets import TEXT_ENCODERS, ModuleTable, base_layer, peft_state_dict, resolve

log = logging.getLogger(__name__)

MAX_LOADED = 8  # files kept loaded per model (device memory); beyond that the least recently used goes
COMPONENTS = ("unet", *TEXT_ENCODERS)
NOISY_LOGGERS = ("transformers.integrations.peft", "diffusers.loaders.peft", "diffusers.loaders.lora_base",
                 "diffusers.loaders.lora_pipeline")


class LoadError(Exception):
    """A LoRA file that cannot be put on this model; the message names the file."""


@dataclass
class LoadedLora:
    stamp: tuple[int, int]  # (size, mtime_ns) of the file it was loaded from
    adapter: str | None  # the PEFT adapter's name, or None for a patch
    components: frozenset[str]
    patches: list[PatchLayer] = field(default_factory=list)
    used: int = 0


@dataclass
class ModelLoras:
    """What one loaded model holds: its module table and its loaded files, by path."""

    table: ModuleTable | None = None
    files: dict[str, LoadedLora] = field(default_factory=dict)
    serial: int = 0  # for adapter names
    clock: int = 0  # counts loads, for least-recently-used eviction
    unfinished: StackSession | None = None  # a session whose undo failed; retried before the next job


# Per loaded model, keyed by its UNet (the shared module every job of that model runs): the entry goes
# away with the model even if `model_unloaded` is never heard, and two jobs on one model share it.
# Only this extension's hooks reach it, always through the pipeline they were given.
_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def state_for(pipeline) -> ModelLoras:
    state = _MODELS.get(pipeline.unet)
    if state is None:
        state = _MODELS[pipeline.unet] = ModelLoras()
    return state


def forget(pipeline) -> None:
    _MODELS.pop(pipeline.unet, None)


def load(pipeline, state: ModelLoras, entry: LoraEntry) -> LoadedLora:
    """The file on this model, loading it on first use (or when the file changed)."""
    key = str(entry.path)
    state.clock += 1
    cached = state.files.get(key)
    if cached is not None and cached.stamp == entry.stamp:
        cached.used = state.clock
        return cached
    if cached is not None:
        _drop(pipeline, state, key)
    if state.table is None:
        state.table = ModuleTable(pipeline)
    try:
        with safe_open(entry.path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise LoadError(f"{entry.path}: cannot read its tensors ({type(e).__name__}: {e})") from e
    layout = describe({k: tuple(v.shape) for k, v in tensors.items()})
    if layout.error:
        raise LoadError(f"{entry.path}: {layout.error}")
    try:
        targets = resolve(layout, state.table)
    except ValueError as e:
        raise LoadError(f"{entry.path}: {e}") from e
    components = frozenset(t.component for t in targets.values())
    if layout.adapter:
        name = _new_name(pipeline, state)
        try:
            with _quiet():
                pipeline.load_lora_weights(peft_state_dict(tensors, layout, targets, metadata), adapter_name=name)
        except Exception as e:
            _delete_adapter(pipeline, name)
            raise LoadError(f"{entry.path}: diffusers could not load it ({type(e).__name__}: {e})") from e
        loaded = LoadedLora(entry.stamp, name, components)
    else:
        loaded = LoadedLora(entry.stamp, None, components, patch_layers(tensors, layout.modules, targets))
    loaded.used = state.clock
    state.files[key] = loaded
    return loaded


def evict(pipeline, state: ModelLoras, keep: set[str]) -> None:
    """Drop the least recently used files beyond MAX_LOADED (never one in `keep`)."""
    spare = sorted((f.used, k) for k, f in state.files.items() if k not in keep)
    for _, key in spare[: max(0, len(state.files) - MAX_LOADED)]:
        _drop(pipeline, state, key)


def _drop(pipeline, state: ModelLoras, key: str) -> None:
    loaded = state.files.pop(key)
    if loaded.adapter:
        _delete_adapter(pipeline, loaded.adapter)


def _new_name(pipeline, state: ModelLoras) -> str:
    taken = {a for adapters in _adapters(pipeline).values() for a in adapters}
    while f"lora{state.serial}" in taken:
        state.serial += 1
    state.serial += 1
    return f"lora{state.serial - 1}"


def _adapters(pipeline) -> dict[str, list[str]]:
    return {c: list(getattr(m, "peft_config", {}) or {}) for c, m in _components(pipeline)}


def _components(pipeline):
    for name in COMPONENTS:
        model = getattr(pipeline, name, None)
        if isinstance(model, torch.nn.Module):
            yield name, model


def _delete_adapter(pipeline, name: str) -> None:
    for component, model in _components(pipeline):
        if name in (getattr(model, "peft_config", None) or {}):
            try:
                (model.delete_adapters if component == "unet" else model.delete_adapter)(name)
            except Exception:  # a half-loaded adapter; nothing better to do than say so
                log.exception("could not delete LoRA adapter %s from the %s", name, component)


def _tuner_layers(pipeline, components=COMPONENTS):
    for name, model in _components(pipeline):
        if name in components:
            yield from (m for m in model.modules() if isinstance(m, BaseTunerLayer))


class _DropWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING


@contextmanager
def _quiet():
    """Loading an adapter into a transformers text encoder logs a "LOAD REPORT" that lists every base
    weight as MISSING (transformers 5.23 + diffusers 0.42; the weights are fine) and draws a progress
    bar; diffusers warns about components a file has no weights for, PEFT about a second adapter. All
    would greet every first use of a LoRA: keep warnings of those loggers and the bar off for the call."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    quiet, loggers = _DropWarnings(), [logging.getLogger(n) for n in NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass
class Active:
    """One file of the job's stack with its weights."""

    loaded: LoadedLora
    te: float
    unet: float

    def weight(self, component: str) -> float:
        return self.unet if component == "unet" else self.te


class StackSession:
    """One job's stack switched on over the shared modules; `undo()` puts them back exactly."""

    def __init__(self, pipeline, state: ModelLoras):
        self.pipeline, self.state = pipeline, state
        self.patch = WeightPatch()
        self.adapters_set = False

    def apply(self, stack: list[Active], fuse: bool) -> None:
        adapters = [a for a in stack if a.loaded.adapter]
        if adapters:
            self.adapters_set = True
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

    def _fuse(self, names: list[str]) -> None:
        """Fold the weighted adapters into the weights for this job and leave the adapters off, so a step
        costs what a base step costs. PEFT's merge/unmerge would subtract the delta again afterwards (float
        rounding: not the base bit for bit) and compute it twice, one GEMM per adapter; here one GEMM per
        layer writes W + sum(s_i B_i A_i) into a new tensor and the original is kept aside."""
        _enable(self.pipeline, False)
        for layer in _tuner_layers(self.pipeline):
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
    for layer in _tuner_layers(pipeline):
        layer.enable_adapters(on)
