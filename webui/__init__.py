"""Easel: a local web UI for Stable Diffusion on diffusers.

Extensions import `hookimpl` from here: `from webui import hookimpl`. This module stays free of
third-party imports (launch.py imports `webui.bootstrap` before the virtualenv exists), so
`hookimpl` is resolved lazily."""

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str):
    if name == "hookimpl":
        from webui.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'webui' has no attribute {name!r}")
