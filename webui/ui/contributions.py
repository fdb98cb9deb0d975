"""What extensions add to the page (`ui_top_bar`, `ui_section`, `ui_tabs`), collected and built so that
a broken one is reported (in the Extensions tab) and left out, never breaking the page."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from webui.plugins import Plugins

log = logging.getLogger(__name__)


def collect(plugins: Plugins, hook: str, failures: list[str], **kwargs) -> list[Any]:
    """Everything the extensions `register(...)` through `hook`; a hook that raises goes to `failures`."""
    found: list[Any] = []
    try:
        plugins.call_each(hook, register=found.append, **kwargs)
    except Exception as e:
        failures.append(str(e))
        log.error("%s: %s", hook, e)
    return found


def build_guarded(kind: str, name: str, build: Callable[[], Any], failures: list[str]) -> tuple[Any, str | None]:
    """(`build()`'s result, None), or (None, the error in one line) with the failure recorded."""
    try:
        return build(), None
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        failures.append(f"{kind} {name!r} failed to build: {error}")
        log.exception("%s %r", kind, name)
        return None, error
