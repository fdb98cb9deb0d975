"""LoRA files on a loaded model. Each file is loaded once per model and kept: plain LoRA/LoCon as a
diffusers (PEFT) adapter on the shared UNet and text encoders, LyCORIS/DoRA as tensors ready to patch.
A job's stack is then only switched on around the job (`session.StackSession`), so no job ever reloads
the base weights."""

from __future__ import annotations

import logging
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open

from extensions.lora.layout import describe
from extensions.lora.library import LoraEntry
from extensions.lora.patches import PatchLayer, patch_layers
from extensions.lora.targets import TEXT_ENCODERS, ModuleTable, peft_state_dict, resolve

if TYPE_CHECKING:
    from extensions.lora.combined import CombinedStack
    from extensions.lora.session import FusedStack, StackSession

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
    ident: int = 0  # unique per model's state: a file reloaded after a change is a new LoRA for the fused cache


@dataclass
class ModelLoras:
    """What one loaded model holds: its module table and its loaded files, by path."""

    table: ModuleTable | None = None
    files: dict[str, LoadedLora] = field(default_factory=dict)
    serial: int = 0  # for adapter names
    clock: int = 0  # counts loads, for least-recently-used eviction
    unfinished: StackSession | None = None  # a session whose undo failed; retried before the next job
    fused: FusedStack | None = None  # the last fused stack's weights, reused while the stack stays the same
    combined: CombinedStack | None = None  # the last unfused stack of several files, as one adapter


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


def loaded_models() -> list[ModelLoras]:
    """Every loaded model's state (to drop fused weights a moved model no longer uses)."""
    return list(_MODELS.values())


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
        name = new_name(pipeline, state)
        try:
            with quiet():
                pipeline.load_lora_weights(peft_state_dict(tensors, layout, targets, metadata), adapter_name=name)
        except Exception as e:
            delete_adapter(pipeline, name)
            raise LoadError(f"{entry.path}: diffusers could not load it ({type(e).__name__}: {e})") from e
        loaded = LoadedLora(entry.stamp, name, components)
    else:
        loaded = LoadedLora(entry.stamp, None, components, patch_layers(tensors, layout.modules, targets))
    loaded.used = loaded.ident = state.clock
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
        delete_adapter(pipeline, loaded.adapter)
    if state.combined is not None and loaded.ident in state.combined.key:
        delete_adapter(pipeline, state.combined.name)
        state.combined = None


def new_name(pipeline, state: ModelLoras, prefix: str = "lora") -> str:
    """An adapter name no component has yet."""
    taken = {a for adapters in _adapters(pipeline).values() for a in adapters}
    while f"{prefix}{state.serial}" in taken:
        state.serial += 1
    state.serial += 1
    return f"{prefix}{state.serial - 1}"


def _adapters(pipeline) -> dict[str, list[str]]:
    return {c: list(getattr(m, "peft_config", {}) or {}) for c, m in components(pipeline)}


def components(pipeline):
    for name in COMPONENTS:
        model = getattr(pipeline, name, None)
        if isinstance(model, torch.nn.Module):
            yield name, model


def delete_adapter(pipeline, name: str) -> None:
    for component, model in components(pipeline):
        if name in (getattr(model, "peft_config", None) or {}):
            try:
                (model.delete_adapters if component == "unet" else model.delete_adapter)(name)
            except Exception:  # a half-loaded adapter; nothing better to do than say so
                log.exception("could not delete LoRA adapter %s from the %s", name, component)


def tuner_layers(pipeline, only=COMPONENTS):
    for name, model in components(pipeline):
        if name in only:
            yield from (m for m in model.modules() if isinstance(m, BaseTunerLayer))


class _DropWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING


@contextmanager
def quiet():
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
