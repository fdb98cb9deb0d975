"""Saved settings: the value of every `Setting` (Easel's own and extensions'), kept in `config.json`.

The file is A1111's: `--data-dir` pointed at an A1111 install reads its `config.json`, and keys Easel
does not know are kept untouched when Easel saves. Saving writes a temp file and renames it, so a crash
never leaves half a file; an unreadable `config.json` is never overwritten (saving says why)."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from webui.fileio import atomic_write_json
from webui.hooktypes import Setting

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A value a setting does not accept, or a config file that cannot be saved; names the setting."""


def check_value(setting: Setting, value: Any) -> Any:
    """`value` converted to the setting's type, or SettingsError naming the setting and what it takes."""
    kind = type(setting.default)
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError
        elif kind in (int, float):
            if isinstance(value, bool):  # True is an int to Python, not a number to a user
                raise TypeError
            if not isinstance(value, (int, float)):
                value = float(value)
            if not math.isfinite(value):  # NaN passes every min/max comparison; int(inf) overflows
                raise ValueError
            if kind is int:
                if value != int(value):
                    raise TypeError
                value = int(value)
            else:
                value = float(value)
        elif kind is str:
            if not isinstance(value, str):
                raise TypeError
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(f"setting {setting.key!r} ({setting.label}) takes a {kind.__name__}, got {value!r}") from None
    if setting.choices is not None and value not in setting.choices:
        raise SettingsError(f"setting {setting.key!r} ({setting.label}) takes one of {list(setting.choices)}, got {value!r}")
    if setting.minimum is not None and value < setting.minimum or setting.maximum is not None and value > setting.maximum:
        raise SettingsError(f"setting {setting.key!r} ({setting.label}) takes {setting.minimum}..{setting.maximum}, got {value!r}")
    return value


class Config:
    """Typed values by key; `update` checks every change first, then saves once and tells listeners."""

    def __init__(self, path: Path, settings: Iterable[Setting]):
        self.path = Path(path)
        self.settings: dict[str, Setting] = {}
        for s in settings:
            if s.key in self.settings:
                log.warning("setting %r declared twice; the first declaration is kept", s.key)
                continue
            self.settings[s.key] = s
        self._lock = threading.Lock()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._raw, self.load_error = self._read()
        self.values: dict[str, Any] = {}
        for key, s in self.settings.items():
            self.values[key] = s.default
            if key in self._raw:
                try:
                    self.values[key] = check_value(s, self._raw[key])
                except SettingsError as e:
                    log.warning("%s: %s; using the default %r", self.path, e, s.default)

    def _read(self) -> tuple[dict[str, Any], str | None]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}, None
        except (OSError, ValueError) as e:
            log.warning("%s is unreadable (%s): using defaults; it will not be overwritten", self.path, e)
            return {}, f"{self.path} is unreadable ({e}); fix or remove it to save settings"
        if not isinstance(raw, dict):
            return {}, f"{self.path} does not hold a JSON object; fix or remove it to save settings"
        return raw, None

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def on_change(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """`listener(changed)` runs after each successful save with {key: new value}."""
        self._listeners.append(listener)

    def update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Check, apply and save `changes`; returns what actually changed. Nothing is applied or saved
        when any value is refused (SettingsError names it) or the file cannot be written."""
        if self.load_error:
            raise SettingsError(self.load_error)
        with self._lock:
            checked = {}
            for key, value in changes.items():
                if key not in self.settings:
                    raise SettingsError(f"unknown setting {key!r}")
                checked[key] = check_value(self.settings[key], value)
            changed = {k: v for k, v in checked.items() if self.values[k] != v}
            if not changed:
                return {}
            current, error = self._read()  # A1111 may have saved its own keys since Easel read the file
            if error:
                raise SettingsError(error)
            raw = {**self._raw, **current, **changed}
            try:
                atomic_write_json(self.path, raw)
            except OSError as e:
                raise SettingsError(f"could not save {self.path}: {e}") from e
            self._raw = raw
            self.values.update(changed)
        for listener in self._listeners:
            listener(changed)
        return changed

    def sections(self) -> dict[str, list[Setting]]:
        """Settings grouped by section, in declaration order."""
        grouped: dict[str, list[Setting]] = {}
        for s in self.settings.values():
            grouped.setdefault(s.section, []).append(s)
        return grouped
