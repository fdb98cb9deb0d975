"""The plugin manager: built-in extensions, pip-installed ones (entry-point group `easel`) and drop-ins
from the user's `extensions/` folder, all through the same hooks (`webui/hookspecs.py`).

A broken extension never takes Easel down: an import error or a bad hook name is recorded as a
`PluginFailure` (name + traceback, shown in the log and the UI) and the rest loads; an exception in a
hook during a job becomes `ExtensionError` naming the extension, which fails that job only."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import pluggy

from webui import __version__, hookspecs
from webui.hooktypes import APIScript, ExtraNetworkType, Route, Setting

log = logging.getLogger(__name__)

BUILTIN_PLUGINS = ("checkpoints", "lora")  # packages under extensions/, registered by default
ENTRY_POINT_GROUP = "easel"
ONLY_ENV = "EASEL_LOAD_PLUGINS"  # "a,b": load only these; "": load none


class ExtensionError(RuntimeError):
    """A hook implementation raised; the message names the extension and the hook.

    Errors that describe the user's request (ValueError, LookupError, and Easel's CheckpointError)
    pass through unchanged, with a note naming the extension, so callers can still answer "bad request"."""

    def __init__(self, extension: str, hook: str, error: BaseException):
        super().__init__(f"extension {extension!r} failed in {hook}: {type(error).__name__}: {error}")
        self.extension, self.hook = extension, hook


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    source: str  # "built-in" | "package" | "folder"
    hooks: tuple[str, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "source": self.source, "hooks": list(self.hooks)}


@dataclass(frozen=True)
class PluginFailure:
    name: str
    source: str
    error: str  # one line
    traceback: str


class Plugins:
    """pluggy's PluginManager plus where each plugin came from, load failures, and error attribution."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        # historic: pluggy replays this call to every plugin registered later, once each
        self.pm.hook.addhooks.call_historic(kwargs={"pluginmanager": self.pm})
        self.sources: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.failures: list[PluginFailure] = []

    @property
    def hook(self):
        return self.pm.hook

    # ---- loading ------------------------------------------------------------------------------

    @classmethod
    def builtin(cls) -> "Plugins":
        """Only the built-in extensions (what library users and most tests want)."""
        plugins = cls()
        plugins.load(entry_points_too=False, folder=None)
        return plugins

    def load(self, *, builtins: bool = True, entry_points_too: bool = True, folder: Path | None = None,
             disabled: Iterable[str] = (), only: Iterable[str] | None = None) -> "Plugins":
        """Register extensions from every source; `only`/`EASEL_LOAD_PLUGINS` and `disabled` filter by name."""
        if only is None and ONLY_ENV in os.environ:
            only = [n.strip() for n in os.environ[ONLY_ENV].split(",") if n.strip()]
        allowed = (lambda n: n in set(only)) if only is not None else (lambda n: True)
        blocked = set(disabled)

        def wanted(name: str) -> bool:
            return allowed(name) and name not in blocked

        if builtins:
            for name in filter(wanted, BUILTIN_PLUGINS):
                self._guarded(name, "built-in", lambda name=name: importlib.import_module(f"extensions.{name}"), None)
        if entry_points_too:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if wanted(ep.name) and ep.name not in self.sources:
                    version = ep.dist.version if ep.dist else ""
                    self._guarded(ep.name, "package", ep.load, version)
        if folder is not None and folder.is_dir():
            for path in sorted(folder.iterdir()):
                name = path.stem if path.suffix == ".py" else path.name
                if name.startswith(("_", ".")) or name in BUILTIN_PLUGINS or not wanted(name) or name in self.sources:
                    continue
                if path.suffix == ".py" or (path / "__init__.py").is_file():
                    self._guarded(name, "folder", lambda path=path, name=name: _import_path(path, name), None)
        return self

    def register(self, plugin: Any, name: str, source: str = "package", version: str = "") -> None:
        """Register a module or object of hook implementations (tests register plugins this way too)."""
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
            for impl in self.pm.hook.prepare_pipeline.get_hookimpls():
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    raise pluggy.PluginValidationError(
                        plugin, f"{name}: prepare_pipeline must be @hookimpl(wrapper=True) (patch, yield, undo)")
        except pluggy.PluginValidationError:
            self.pm.unregister(name=name)
            raise
        self.sources[name] = source
        self.versions[name] = version

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.sources.pop(name, None)
        self.versions.pop(name, None)

    def _guarded(self, name: str, source: str, load: Callable[[], Any], version: str | None) -> None:
        try:
            plugin = load()
            if version is None:
                version = getattr(plugin, "__version__", "") or (__version__ if source == "built-in" else "")
            self.register(plugin, name, source, version)
        except Exception as e:  # an extension's bug must not stop Easel
            tb = traceback.format_exc()
            self.failures.append(PluginFailure(name, source, f"{type(e).__name__}: {e}", tb))
            log.error("extension %r (%s) failed to load and is disabled:\n%s", name, source, tb)

    # ---- what is loaded -----------------------------------------------------------------------

    def infos(self) -> list[PluginInfo]:
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if name not in self.sources:
                continue
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or ())
            out.append(PluginInfo(name, self.versions.get(name, ""), self.sources[name], tuple(hooks)))
        return sorted(out, key=lambda i: (i.source != "built-in", i.name))

    def extra_networks(self) -> dict[str, ExtraNetworkType]:
        found: dict[str, ExtraNetworkType] = {}
        self.call_each("register_extra_networks", register=lambda t: found.setdefault(t.name, t))
        return found

    def settings(self) -> list[Setting]:
        found: list[Setting] = []
        self.call_each("register_settings", register=found.append)
        return found

    def api_scripts(self) -> dict[str, APIScript]:
        """By lower-cased title; the first registration of a title wins."""
        found: dict[str, APIScript] = {}
        self.call_each("register_api_scripts", register=lambda s: found.setdefault(s.title.lower(), s))
        return found

    def model_defaults(self, model) -> dict[str, Any]:
        """Every extension's `model_defaults` merged; where two set a key, the one called first (registered
        last) wins, so a third party overrides a built-in."""
        merged: dict[str, Any] = {}
        for _, defaults in reversed(self.call_each("model_defaults", model=model)):
            merged.update(defaults)
        return merged

    def routes(self) -> list[Route]:
        found: list[Route] = []
        self.call_each("register_routes", register=found.append)
        return found

    # ---- calling ------------------------------------------------------------------------------

    def call_each(self, hook_name: str, **kwargs) -> list[tuple[str, Any]]:
        """Call every plain implementation in pluggy's order (last registered first), each with only the
        arguments it names; returns (extension, result) pairs with None results dropped. An exception
        becomes `ExtensionError` naming the extension."""
        results = []
        for impl in self._plain_impls(hook_name):
            result = _call(impl, hook_name, kwargs)
            if result is not None:
                results.append((impl.plugin_name, result))
        return results

    def first(self, hook_name: str, **kwargs) -> Any:
        """The first non-None result in pluggy's order (for `firstresult` hooks), errors attributed."""
        for impl in self._plain_impls(hook_name):
            result = _call(impl, hook_name, kwargs)
            if result is not None:
                return result
        return None

    def chain(self, hook_name: str, value_arg: str, value: Any, **kwargs) -> Any:
        """Pass `value` through every implementation in turn; None keeps the previous value."""
        for impl in self._plain_impls(hook_name):
            result = _call(impl, hook_name, {value_arg: value, **kwargs})
            if result is not None:
                value = result
        return value

    def _plain_impls(self, hook_name: str) -> list:
        """Non-wrapper implementations in pluggy's call order (last registered first)."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        return [i for i in reversed(impls) if not (i.hookwrapper or i.wrapper)]

    def culprit(self, tb: TracebackType | None) -> str | None:
        """The extension whose code raised, found by walking the traceback (innermost first): a frame of
        a hook implementation's own code first, else a frame in an extension's module."""
        codes, modules = {}, {}
        for name, plugin in self.pm.list_name_plugin():
            for caller in self.pm.get_hookcallers(plugin) or ():
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        codes[getattr(impl.function, "__code__", None)] = name
            mod = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
            modules.setdefault(mod, name)
        frames = []
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        for frame in reversed(frames):
            if frame.f_code in codes:
                return codes[frame.f_code]
        for frame in reversed(frames):
            module = frame.f_globals.get("__name__", "")
            for mod, name in modules.items():
                if module == mod or module.startswith(mod + "."):
                    return name
        return None

def _call(impl, hook_name: str, kwargs: dict) -> Any:
    """One implementation with only the arguments it names (pluggy's rule), errors attributed."""
    try:
        return impl.function(**{a: kwargs[a] for a in impl.argnames})
    except Exception as e:
        raise_attributed(e, impl.plugin_name, hook_name)


def raise_attributed(error: Exception, extension: str, hook: str) -> None:
    """Re-raise an extension's exception: request errors as they are (with a note), others as ExtensionError."""
    from webui.models.header import CheckpointError

    if isinstance(error, (ValueError, LookupError, CheckpointError)):
        error.add_note(f"(raised by extension {extension!r} in {hook})")
        raise error
    raise ExtensionError(extension, hook, error) from error


def _import_path(path: Path, name: str) -> ModuleType:
    """Import a drop-in extension (a .py file or a package folder) under a private module name."""
    module_name = f"easel_extension_{name}"
    target = path / "__init__.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location(
        module_name, target, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
