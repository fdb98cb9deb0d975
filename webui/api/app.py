"""The FastAPI app: Easel's routes, then the routes extensions add through `register_routes`.

`GET /easel/v1/extensions` answers `{"extensions": [...], "failures": [...]}`: each extension as
`easel extensions --json` lists it ({name, version, source, hooks}), and each failure as {name, source,
error}: extensions that did not load, and routes refused. An object rather than the CLI's bare list, so
the failures travel with the list and fields can be added without breaking clients.

A broken extension never takes the API down (as in `webui/plugins.py`): a refused route is logged,
listed under `failures` and left out, while the extension's other routes and everyone else's are added.
Refused: paths under /sdapi/ and /easel/ (Easel's own), a path and method another extension has already
taken, a route FastAPI rejects (bad path or endpoint signature), and every route of an extension whose
`register_routes` raised."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any

import fastapi
import pydantic
from fastapi.middleware.cors import CORSMiddleware

from webui import __version__
from webui.api.context import APIContext
from webui.api.jobs import JobBoard
from webui.api.limits import BodyLimit
from webui.api.sdapi import add_generation_routes
from webui.api.sdapi_info import add_info_routes
from webui.config import Config
from webui.generation.engine import Engine
from webui.hooktypes import Route
from webui.plugins import PluginFailure, Plugins

log = logging.getLogger(__name__)
RESERVED_PREFIXES = ("/sdapi", "/easel")


class ExtensionJSON(pydantic.BaseModel):
    name: str
    version: str
    source: str  # "built-in" | "package" | "folder"
    hooks: list[str]


class FailureJSON(pydantic.BaseModel):
    name: str
    source: str
    error: str


class ExtensionsJSON(pydantic.BaseModel):
    extensions: list[ExtensionJSON]
    failures: list[FailureJSON]


def create_app(engine: Engine, plugins: Plugins, dependencies: Sequence[Any] = (), *, config: Config | None = None,
               sdapi: bool = True, cmd_flags: dict[str, Any] | None = None,
               cors_origins: Sequence[str] = ()) -> fastapi.FastAPI:
    """Easel's routes come first and extension routes last: Starlette tries routes in order, so an
    extension's path parameters (`/{rest:path}`) cannot shadow Easel's. The Gradio UI is mounted after
    all of them. `dependencies` apply to every route, extensions' included (the server's HTTP Basic
    auth). `sdapi`: serve A1111's /sdapi/v1 routes (`--api`); `config`: the saved settings they read and
    change (`/sdapi/v1/options`)."""
    app = fastapi.FastAPI(title="Easel", version=__version__, dependencies=list(dependencies),
                          description="AUTOMATIC1111-compatible API (/sdapi/v1) and Easel's own (/easel/v1). "
                                      "See docs/api.md.")
    app.state.engine, app.state.plugins = engine, plugins
    app.add_middleware(BodyLimit)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"], allow_headers=["*"],
                           allow_credentials=True)
    ctx = APIContext(engine, plugins, config, JobBoard(engine), dict(cmd_flags or {}))
    app.state.api = ctx
    if sdapi:
        add_generation_routes(app, ctx)
        add_info_routes(app, ctx)

    def list_extensions() -> ExtensionsJSON:
        """Loaded extensions with their hooks, and what failed: extensions that did not load, routes refused."""
        failures = [*plugins.failures, *app.state.route_failures]
        return ExtensionsJSON(extensions=[ExtensionJSON(**i.to_json()) for i in plugins.infos()],
                              failures=[FailureJSON(name=f.name, source=f.source, error=f.error) for f in failures])

    app.add_api_route("/easel/v1/extensions", list_extensions, methods=["GET"])
    app.state.route_failures = add_extension_routes(app, plugins)
    return app


def add_extension_routes(app: fastapi.FastAPI, plugins: Plugins) -> list[PluginFailure]:
    """Add every extension's routes to `app`; return the refusals (each one is also logged)."""
    failures: list[PluginFailure] = []
    owners: dict[tuple[str, str], str] = {}  # (path, METHOD) -> extension

    def refuse(name: str, error: str, tb: str = "") -> None:
        failures.append(PluginFailure(name, plugins.sources.get(name, ""), error, tb))
        log.error("extension %r: %s", name, error)

    for name, routes, tb in _routes_by_extension(plugins):
        if tb:
            refuse(name, f"register_routes raised, none of its routes were added: {tb.splitlines()[-1]}", tb)
            continue
        for route in routes:
            error = _refusal(route, owners)
            if error is None:
                try:
                    app.add_api_route(route.path, route.endpoint, methods=list(route.methods))
                except Exception as e:  # FastAPI checks paths and endpoint signatures here
                    error = f"route {route.path!r} refused by FastAPI: {type(e).__name__}: {e}"
            if error is None:
                owners.update({(route.path, m.upper()): name for m in route.methods})
            else:
                refuse(name, error)
    return failures


def _routes_by_extension(plugins: Plugins) -> list[tuple[str, list[Route], str]]:
    """(extension, routes, traceback or "") per `register_routes` implementation, in pluggy's order.

    Not `plugins.routes()`: that merges every extension's routes into one list, but a refusal must name
    the extension, and one extension raising must not cost the others their routes."""
    found = []
    for impl in reversed(plugins.hook.register_routes.get_hookimpls()):
        routes: list[Route] = []
        try:
            impl.function(**{arg: routes.append for arg in impl.argnames})  # the only argument is `register`
            found.append((impl.plugin_name, routes, ""))
        except Exception:
            found.append((impl.plugin_name, [], traceback.format_exc()))
    return found


def _refusal(route: Route, owners: dict[tuple[str, str], str]) -> str | None:
    """Why this route may not be added, or None."""
    if not isinstance(route, Route):
        return f"registered a {type(route).__name__}, not a webui.hooktypes.Route"
    if route.path.rstrip("/") in RESERVED_PREFIXES or route.path.startswith(tuple(p + "/" for p in RESERVED_PREFIXES)):
        return f"route {route.path!r} refused: paths under /sdapi/ and /easel/ are reserved for Easel"
    taken = [owners[key] for m in route.methods if (key := (route.path, m.upper())) in owners]
    if taken:
        return f"route {route.path!r} refused: extension {taken[0]!r} already has it"
    return None
