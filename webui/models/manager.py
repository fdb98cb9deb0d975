"""The model manager: one object the UI, API, CLI and extensions share to find and load models.

It owns the registry (what is on disk), the cache (what is loaded) and the VAE choice, and it is
passed to whoever needs it (no module globals)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from webui.fileio import atomic_write_bytes
from webui.models.cache import ModelCache
from webui.models.demo import DEMO_NOTICE, ensure_demo_checkpoints
from webui.models.families import FAMILIES, Family
from webui.models.hashes import HashCache
from webui.models.header import CheckpointError, read_header
from webui.models.loader import load_pipeline
from webui.models.registry import CheckpointEntry, CheckpointRegistry, inspect_checkpoint, match
from webui.models.vae import AUTOMATIC, list_vaes, load_vae, resolve_vae
from webui.settings import Paths, RuntimeSettings

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    entry: CheckpointEntry
    family: Family
    pipeline: object
    vae: str | None  # the external VAE file in use, None for the checkpoint's own


class ModelManager:
    def __init__(self, paths: Paths, runtime: RuntimeSettings | None = None, plugins=None):
        """`plugins` (webui.plugins.Plugins) hears `model_loaded` / `model_unloaded`."""
        self.paths = paths
        self.runtime = runtime or RuntimeSettings()
        self.plugins = plugins
        self.dtype = DTYPES[self.runtime.dtype]
        self.hashes = HashCache(paths.cache_dir / "hashes.json")
        self.registry = CheckpointRegistry(paths.ckpt_dirs, self.hashes)
        self.cache = ModelCache(self.runtime.ram_budget, self.runtime.device, self.runtime.offload,
                                self.runtime.vram_budget, on_evict=self._evicted)
        self.using_demo = False
        # Demo models are built by one thread at a time, and every load passes this lock only once they are
        # written: a diffusers load puts any module built meanwhile, in any thread, on the meta device.
        self._demo_lock = threading.Lock()
        self.default_checkpoint = ""  # title, name or hash the user chose (A1111's sd_model_checkpoint); "" = first
        self.default_vae = AUTOMATIC  # the VAE when a request names none (A1111's sd_vae)

    def checkpoints(self) -> list[CheckpointEntry]:
        """The user's checkpoints; the built-in demo models when there is none."""
        entries = self.registry.scan()
        using_demo = not any(e.detection.known for e in entries)
        if using_demo and not self.using_demo:
            log.warning(DEMO_NOTICE.format(folder=self.paths.folder("checkpoints")))
        self.using_demo = using_demo
        if using_demo:
            with self._demo_lock:
                folder = ensure_demo_checkpoints(self.paths.cache_dir)
            demo = CheckpointRegistry((folder,), self.hashes)
            entries = entries + demo.scan()
        return entries

    def find(self, query: str) -> CheckpointEntry:
        return match(self.checkpoints(), query, self.paths.ckpt_dirs)

    def entry_for_path(self, path: Path) -> CheckpointEntry:
        """A checkpoint file or diffusers folder outside the model folders (the CLI's `--model PATH`).
        Only for the local user's own command line: the API resolves names, never paths."""
        path = Path(path).expanduser().resolve()
        if not path.exists():
            raise LookupError(f"{path}: no such checkpoint file or folder")
        entry = inspect_checkpoint(path, path.name, self.hashes)
        if not entry.detection.known:
            raise CheckpointError(f"{path}: not a checkpoint Easel can load ({entry.detection.reason})")
        return entry

    def default(self) -> CheckpointEntry:
        """The chosen default checkpoint (`default_checkpoint`) while it exists, else the first usable one."""
        entries = self.checkpoints()
        if self.default_checkpoint:
            try:
                chosen = match(entries, self.default_checkpoint, self.paths.ckpt_dirs)
                if chosen.detection.known:
                    return chosen
            except LookupError:
                log.warning("the default checkpoint %r is gone; using the first one", self.default_checkpoint)
        usable = [e for e in entries if e.detection.known]
        if not usable:
            raise LookupError(f"no usable checkpoint in {self.paths.folder('checkpoints')}")
        return usable[0]

    def load(self, entry: CheckpointEntry | str | None = None, vae: str = AUTOMATIC) -> LoadedModel:
        """The ready pipeline for a checkpoint (cached), with the chosen VAE applied."""
        entry = self.default() if entry is None else self.find(entry) if isinstance(entry, str) else entry
        key = self._key(entry)
        cached = self.cache.get(key)
        if cached is None:
            log.info("loading %s (%s)", entry.name, entry.detection.family)
            self.cache.make_room(self._estimate_bytes(entry))
            pipe = load_pipeline(entry, self.dtype, self.paths.cache_dir)
            cached = self.cache.put(key, pipe, own_vae=pipe.vae, vae_path=None, entry=entry)
            if self.plugins is not None:
                self.plugins.call_each("model_loaded", model=self._loaded(cached))
        vae_path = resolve_vae(vae, entry.path, list_vaes(self.paths.vae_dirs))
        if vae_path != cached.info["vae_path"]:
            own = cached.info["own_vae"]
            new_vae = load_vae(vae_path, self._vae_config_dir(own), self.dtype) if vae_path else own
            cached.pipeline.register_modules(vae=new_vae.to(cached.pipeline.device))
            cached.info["vae_path"] = vae_path
        return self._loaded(cached)

    def _loaded(self, cached) -> LoadedModel:
        entry, vae_path = cached.info["entry"], cached.info["vae_path"]
        return LoadedModel(entry, FAMILIES[entry.detection.family], cached.pipeline, str(vae_path) if vae_path else None)

    def _evicted(self, cached) -> None:
        if self.plugins is not None:
            self.plugins.call_each("model_unloaded", model=self._loaded(cached))

    def _estimate_bytes(self, entry: CheckpointEntry) -> int:
        """Bytes the loaded pipeline will hold: the file's tensors at the requested dtype."""
        if entry.format == "diffusers":
            return entry.size
        numel = sum(math.prod(t.shape) for t in read_header(entry.path).tensors.values())
        return numel * self.dtype.itemsize

    def _vae_config_dir(self, vae) -> Path:
        """A config folder holding this checkpoint's VAE config: an external VAE takes its settings."""
        raw = json.dumps(dict(vae.config), sort_keys=True, default=list)
        folder = self.paths.cache_dir / "configs" / f"vae-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"
        if not (folder / "vae" / "config.json").is_file():
            atomic_write_bytes(folder / "vae" / "config.json", raw.encode())
        return folder

    def in_use(self, model: LoadedModel):
        """`with manager.in_use(model):` keeps the model from budget eviction (a job holding it)."""
        return self.cache.pinned(self._key(model.entry))

    def unload(self, entry: CheckpointEntry) -> None:
        self.cache.evict(self._key(entry))

    def _key(self, entry: CheckpointEntry) -> tuple:
        """A replaced file (new mtime) is a new model, never the stale cached one."""
        return (str(entry.path), entry.path.stat().st_mtime_ns, self.runtime.dtype)
