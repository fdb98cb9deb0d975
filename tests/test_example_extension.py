"""The example third-party extension (examples/easel-hello), pip-installed for real into a private folder:
found through its entry point by `easel extensions` and in-process, its UI section builds a Gradio
textbox, its infotext key survives a real tiny generation and comes back on paste, and its route is
served by the real API app (uvicorn on a loopback port) next to /easel/v1/extensions, which refuses
extension routes under Easel's own prefixes."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.error import HTTPError

import pytest

from api_helpers import serving
from webui import hookimpl
from webui.api import create_app
from webui.generation.engine import Engine, EngineOptions
from webui.generation.params import request_from_infotext
from webui.generation.request import GenerationRequest
from webui.hooktypes import Route
from webui.models.manager import ModelManager
from webui.plugins import ONLY_ENV, Plugins
from webui.settings import Paths

REPO = Path(__file__).resolve().parents[1]
HELLO = {"name": "hello", "version": "0.1.0", "source": "package",
         "hooks": ["infotext_params", "infotext_pasted", "register_routes", "register_settings", "ui_section"]}


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory) -> Path:
    """examples/easel-hello installed by pip into a folder of its own, offline. pip builds from a copy:
    setuptools writes build/ and *.egg-info into the source folder it builds."""
    tmp = tmp_path_factory.mktemp("easel-hello")
    src, site = tmp / "src", tmp / "site"
    shutil.copytree(REPO / "examples" / "easel-hello", src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir"]
    proc = subprocess.run([*pip, "--quiet", "--target", str(site), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


@pytest.fixture(scope="module")
def plugins(hello_site) -> Iterator[Plugins]:
    """All extensions as `easel serve` loads them, with the example's folder on sys.path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(hello_site))
        mp.delenv(ONLY_ENV, raising=False)
        importlib.invalidate_caches()
        yield Plugins().load(folder=None)
    for module in [m for m in sys.modules if m.split(".")[0] == "easel_hello"]:
        del sys.modules[module]


def subprocess_env(site: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    env.pop(ONLY_ENV, None)
    return env


def make_engine(plugins: Plugins, data_dir: Path, checkpoint: Path | None = None) -> Engine:
    paths = Paths.from_flags(data_dir=data_dir)
    paths.folder("checkpoints").mkdir(parents=True)
    if checkpoint is not None:
        (paths.folder("checkpoints") / "tiny.safetensors").symlink_to(checkpoint)
    return Engine(ModelManager(paths, plugins=plugins), EngineOptions(save_images=False), plugins)


def fetch(url: str, method: str = "GET") -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    with opener.open(urllib.request.Request(url, method=method), timeout=30) as response:
        return json.load(response)


def test_easel_extensions_lists_the_installed_package_next_to_the_builtin(hello_site, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "webui.cli", "extensions", "--json", "--data-dir", str(tmp_path)],
                          env=subprocess_env(hello_site), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    listed = {e["name"]: e for e in json.loads(proc.stdout)}
    assert listed["hello"] == HELLO
    assert listed["checkpoints"]["source"] == "built-in"
    assert "failed" not in proc.stderr


def test_importing_the_extension_does_not_import_gradio(hello_site, tmp_path):
    code = "import sys, easel_hello; assert 'gradio' not in sys.modules, 'gradio imported'"
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(hello_site), cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_found_by_entry_point_in_process_and_its_section_builds_a_textbox(plugins):
    import gradio as gr

    info = {i.name: i for i in plugins.infos()}["hello"]
    assert (info.version, info.source) == ("0.1.0", "package")
    assert plugins.failures == []
    assert "hello_in_infotext" in [s.key for s in plugins.settings()]
    sections = []
    plugins.call_each("ui_section", tab="txt2img", register=sections.append, engine=None)  # built-ins' too
    (section,) = [s for s in sections if s.name == "hello"]
    assert section.title == "Hello"
    with gr.Blocks():
        fields = section.build()
    assert list(fields) == ["greeting"] and isinstance(fields["greeting"], gr.Textbox)


def test_greeting_goes_into_the_infotext_and_comes_back_on_paste(plugins, tiny_checkpoint, tmp_path):
    engine = make_engine(plugins, tmp_path / "data", tiny_checkpoint("sd1"))
    request = GenerationRequest(prompt="a cube", steps=2, width=64, height=64, seed=5, sampler="Euler",
                                extensions={"hello": {"greeting": "hi there"}})
    infotext = engine.generate(request).images[0].infotext
    assert "Hello: hi there" in infotext.splitlines()[-1].split(", ")
    pasted = request_from_infotext(infotext, plugins)
    assert pasted.request.extensions["hello"]["greeting"] == "hi there"
    assert "Hello" not in pasted.unknown
    assert request_from_infotext(infotext).unknown["Hello"] == "hi there"  # without the extension, nobody takes it
    off = replace(request, override_settings={"hello_in_infotext": False})  # the example's setting
    assert "Hello" not in request_from_infotext(engine.generate(off).images[0].infotext).unknown


def test_real_server_serves_the_extension_route_and_the_extension_list(plugins, tmp_path):
    app = create_app(make_engine(plugins, tmp_path / "data"), plugins)
    with serving(app) as base:
        assert fetch(base + "/hello/v1/greet") == {"greeting": "hello from easel-hello"}
        body = fetch(base + "/easel/v1/extensions")
    assert body["extensions"] == [i.to_json() for i in plugins.infos()]  # what `easel extensions --json` lists
    assert HELLO in body["extensions"] and "checkpoints" in [e["name"] for e in body["extensions"]]
    assert body["failures"] == []


class ReservedPaths:
    """An extension reaching for Easel's prefixes, with one path of its own."""

    @hookimpl
    def register_routes(self, register):
        register(Route("/sdapi/v1/greedy", lambda: {"hijacked": True}, ("POST",)))
        register(Route("/easel/v1/extensions", lambda: {"hijacked": True}))
        register(Route("/greedy/v1/ok", lambda: {"ok": True}))


def test_extension_routes_under_sdapi_and_easel_are_refused_and_listed(tmp_path):
    plugins = Plugins.builtin()
    plugins.register(ReservedPaths(), "greedy", source="folder")
    with serving(create_app(make_engine(plugins, tmp_path / "data"), plugins)) as base:
        assert fetch(base + "/greedy/v1/ok") == {"ok": True}  # its other route still works
        with pytest.raises(HTTPError) as refused:
            fetch(base + "/sdapi/v1/greedy", method="POST")
        body = fetch(base + "/easel/v1/extensions")
    assert refused.value.code == 404
    assert "greedy" in [e["name"] for e in body["extensions"]]  # refused routes do not unload the extension
    errors = [f["error"] for f in body["failures"] if (f["name"], f["source"]) == ("greedy", "folder")]
    assert len(errors) == 2 and all("reserved for Easel" in e for e in errors)
    assert "'/sdapi/v1/greedy'" in errors[0] and "'/easel/v1/extensions'" in errors[1]


class Raising:
    @hookimpl
    def register_routes(self, register):
        register(Route("/raising/v1/half", lambda: {}))
        raise RuntimeError("no routes today")


class Duplicate:
    @hookimpl
    def register_routes(self, register):
        register(Route("/greedy/v1/ok", lambda: {"second": True}))


def test_a_raising_or_duplicate_registration_costs_only_that_extension(tmp_path):
    plugins = Plugins.builtin()
    plugins.register(ReservedPaths(), "greedy")
    plugins.register(Duplicate(), "duplicate")  # pluggy calls it before "greedy" (last registered first)
    plugins.register(Raising(), "raising")
    app = create_app(make_engine(plugins, tmp_path / "data"), plugins)
    paths = [r.path for r in app.routes]
    assert "/greedy/v1/ok" in paths and "/raising/v1/half" not in paths
    failures = [(f.name, f.error) for f in app.state.route_failures]
    assert any(n == "raising" and "RuntimeError: no routes today" in e for n, e in failures)
    assert ("greedy", "route '/greedy/v1/ok' refused: extension 'duplicate' already has it") in failures
