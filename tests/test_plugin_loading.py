"""Where extensions come from and what happens when one is broken: built-ins, entry points, drop-ins,
EASEL_LOAD_PLUGINS, --disable-extension, `easel extensions --json`; the registry and UI hooks; addhooks;
model_loaded / model_unloaded on a real ModelManager."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine_helpers import linked_paths
from webui import hookimpl
from webui.generation.engine import Engine, EngineOptions
from webui.generation.request import GenerationRequest
from webui.hookspecs import hookspec
from webui.hooktypes import ExtraNetworkType, Route, Setting, UISection, UITab
from webui.models.manager import ModelManager
from webui.plugins import Plugins
from webui.settings import Paths, RuntimeSettings

REPO = Path(__file__).resolve().parents[1]

DROP_INS = {
    "good.py": """
        from webui import hookimpl
        __version__ = "0.3"

        @hookimpl
        def infotext_params(request):
            return {"Good": "yes"}
        """,
    "pkg/__init__.py": """
        from webui import hookimpl
        from .words import WORD  # a drop-in package may import its own modules

        @hookimpl
        def infotext_params():
            return {"Pkg": WORD}
        """,
    "pkg/words.py": "WORD = 'hello'\n",
    "broken.py": "import easel_test_module_that_does_not_exist\n",
    "typo.py": """
        from webui import hookimpl

        @hookimpl
        def infotext_parms(request):  # misspelled: pluggy refuses an unknown hook
            return {"Typo": "yes"}
        """,
    "_helpers.py": "raise RuntimeError('files starting with _ are not extensions')\n",
    "notes.txt": "not an extension\n",
}


def write_drop_ins(data_dir: Path) -> Path:
    folder = data_dir / "extensions"
    for name, text in DROP_INS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture(scope="module")
def paths(tiny_checkpoint, tmp_path_factory) -> Paths:
    sd1 = tiny_checkpoint("sd1")
    paths = linked_paths(tmp_path_factory.mktemp("loading-data"), {"tiny.safetensors": sd1, "other.safetensors": sd1})
    write_drop_ins(paths.data_dir)
    return paths


@pytest.fixture(autouse=True)
def no_env_filter(monkeypatch):
    monkeypatch.delenv("EASEL_LOAD_PLUGINS", raising=False)


def names(plugins: Plugins) -> dict[str, str]:
    return {i.name: i.source for i in plugins.infos()}


def test_broken_drop_ins_are_listed_and_the_rest_generates(paths):
    plugins = Plugins().load(entry_points_too=False, folder=paths.data_dir / "extensions")
    assert names(plugins) == {"checkpoints": "built-in", "lora": "built-in", "good": "folder", "pkg": "folder"}
    assert {i.name: (i.version, i.hooks) for i in plugins.infos()}["good"] == ("0.3", ("infotext_params",))
    failed = {f.name: f for f in plugins.failures}
    assert sorted(failed) == ["broken", "typo"] and {f.source for f in failed.values()} == {"folder"}
    assert failed["broken"].error.startswith("ModuleNotFoundError")
    assert "easel_test_module_that_does_not_exist" in failed["broken"].traceback
    assert "infotext_parms" in failed["typo"].error and "Traceback" in failed["typo"].traceback

    engine = Engine(ModelManager(paths, plugins=plugins), EngineOptions(save_images=False))
    result = engine.generate(GenerationRequest(prompt="a cube", steps=2, width=64, height=64, seed=1))
    assert "Good: yes" in result.infotexts[0] and "Pkg: hello" in result.infotexts[0]
    assert "Typo" not in result.infotexts[0]


def test_load_plugins_env_and_disabled_filter_by_name(paths, monkeypatch):
    folder = paths.data_dir / "extensions"
    monkeypatch.setenv("EASEL_LOAD_PLUGINS", "good, checkpoints")
    only = Plugins().load(folder=folder)
    assert names(only) == {"checkpoints": "built-in", "good": "folder"} and only.failures == []  # others not imported
    monkeypatch.setenv("EASEL_LOAD_PLUGINS", "")
    none = Plugins().load(folder=folder)
    assert names(none) == {} and none.failures == []
    monkeypatch.delenv("EASEL_LOAD_PLUGINS")
    some = Plugins().load(entry_points_too=False, folder=folder, disabled=["good", "checkpoints", "lora"])
    assert names(some) == {"pkg": "folder"} and sorted(f.name for f in some.failures) == ["broken", "typo"]


def test_pip_packages_load_through_the_easel_entry_point_group(tmp_path, monkeypatch):
    """A real installed distribution (dist-info on sys.path) declaring `[project.entry-points.easel]`."""
    (tmp_path / "easel_ep_hello.py").write_text("from webui import hookimpl\n\n@hookimpl\ndef step_end(state):\n    pass\n")
    info = tmp_path / "easel_ep_hello-0.7.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: easel-ep-hello\nVersion: 0.7\n")
    (info / "entry_points.txt").write_text("[easel]\nep_hello = easel_ep_hello\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = Plugins().load(builtins=False)
    hello = {i.name: i for i in plugins.infos()}["ep_hello"]
    assert (hello.source, hello.version, hello.hooks) == ("package", "0.7", ("step_end",))
    assert "ep_hello" not in names(Plugins().load(builtins=False, disabled=["ep_hello"]))


def easel(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EASEL_LOAD_PLUGINS"}
    return subprocess.run([sys.executable, "-m", "webui.cli", "extensions", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_easel_extensions_json_lists_built_ins_drop_ins_and_failures(paths):
    out = easel("--data-dir", str(paths.data_dir), "--json")
    assert out.returncode == 0, out.stderr
    listed = {e["name"]: e for e in json.loads(out.stdout)}
    assert all(set(e) == {"name", "version", "source", "hooks"} for e in listed.values())
    assert listed["checkpoints"]["source"] == "built-in" and "select_model" in listed["checkpoints"]["hooks"]
    assert listed["good"] == {"name": "good", "version": "0.3", "source": "folder", "hooks": ["infotext_params"]}
    assert "extension 'broken' (folder) failed to load: ModuleNotFoundError" in out.stderr
    out = easel("--data-dir", str(paths.data_dir), "--json", "--disable-extension", "good")
    assert "good" not in {e["name"] for e in json.loads(out.stdout)}


class Registries:
    @hookimpl
    def register_extra_networks(self, register):
        register(ExtraNetworkType("hello", "Hello", list_items=lambda: [{"name": "wave"}]))

    @hookimpl
    def register_settings(self, register):
        register(Setting("hello_greeting", "Hello", "Greeting", section="Hello", choices=("Hello", "Hi")))

    @hookimpl
    def register_routes(self, register):
        register(Route("/hello/v1/greet", lambda: {"greeting": "Hello"}))

    @hookimpl
    def ui_tabs(self, register):
        register(UITab("hello", "Hello", lambda: None))

    @hookimpl
    def ui_section(self, tab, register):
        if tab == "txt2img":
            register(UISection("hello", "Hello", lambda: {"greeting": "a gradio component"}))


def test_registry_and_ui_hooks_collect_through_register_callbacks():
    plugins = Plugins.builtin()
    plugins.register(Registries(), "hello")
    assert plugins.extra_networks()["hello"].list_items() == [{"name": "wave"}]
    assert [s.key for s in plugins.settings()] == ["hello_greeting", "lora_fuse"]  # the built-in LoRA's last
    (route,) = plugins.routes()
    assert (route.path, route.methods, route.endpoint()) == ("/hello/v1/greet", ("GET",), {"greeting": "Hello"})
    tabs: list[UITab] = []
    plugins.call_each("ui_tabs", register=tabs.append)
    assert [t.name for t in tabs] == ["hello"]
    sections: dict[str, list[UISection]] = {tab: [] for tab in ("txt2img", "img2img", "inpaint")}
    for tab, found in sections.items():
        plugins.call_each("ui_section", tab=tab, register=found.append, engine=None)
    names = {tab: [s.name for s in found] for tab, found in sections.items()}
    assert names == {"txt2img": ["hello", "lora"], "img2img": ["lora"], "inpaint": ["lora"]}  # the built-in LoRA's too
    assert sections["txt2img"][0].build() == {"greeting": "a gradio component"}


class GreetingSpecs:
    """Hookspecs one extension offers to others (a module in real life; a class works the same)."""

    @hookspec
    def hello_greetings(greetings: list) -> None:
        """Append greetings."""


class Provider:
    def __init__(self):
        self.calls: list = []

    @hookimpl
    def addhooks(self, pluginmanager):
        self.calls.append(pluginmanager)
        pluginmanager.add_hookspecs(GreetingSpecs)


class Greeter:
    @hookimpl(optionalhook=True)  # may be registered before the extension that adds the hook
    def hello_greetings(self, greetings):
        greetings.append("hi")


@pytest.mark.parametrize("order", [("provider", "greeter"), ("greeter", "provider")])
def test_addhooks_lets_one_extension_offer_hooks_to_another(order):
    plugins = Plugins.builtin()
    provider = Provider()
    for name in order:
        plugins.register(provider if name == "provider" else Greeter(), name)
    plugins.register(Registries(), "later")  # a later registration does not call addhooks again
    assert provider.calls == [plugins.pm]  # once, with pluggy's PluginManager
    greetings: list[str] = []
    plugins.call_each("hello_greetings", greetings=greetings)
    assert greetings == ["hi"]
    assert "addhooks" in {i.name: i.hooks for i in plugins.infos()}["provider"]


def test_model_loaded_for_loads_not_cache_hits_and_model_unloaded_on_eviction(paths):
    events = []

    class Watch:
        @hookimpl
        def model_loaded(self, model):
            events.append(("loaded", model.entry.name, model.pipeline is not None))

        @hookimpl
        def model_unloaded(self, model):
            events.append(("unloaded", model.entry.name, model.pipeline is not None))

    plugins = Plugins()
    plugins.register(Watch(), "watch")
    manager = ModelManager(paths, plugins=plugins)
    tiny = manager.load("tiny")
    manager.load("tiny")  # a cache hit
    assert events == [("loaded", "tiny.safetensors", True)]
    manager.unload(tiny.entry)
    assert events[1:] == [("unloaded", "tiny.safetensors", True)]

    events.clear()
    small = ModelManager(paths, RuntimeSettings(ram_budget=1), plugins=plugins)  # room for one model at a time
    small.load("tiny")
    small.load("other")
    assert events == [("loaded", "tiny.safetensors", True), ("unloaded", "tiny.safetensors", True),
                      ("loaded", "other.safetensors", True)]
