"""A1111's prompt styles: `styles.csv` in the data folder (columns name, prompt, negative_prompt), read
as A1111 writes it so an existing file works unchanged. Read-only here: the file is A1111's to edit."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def read_styles(path: Path) -> dict[str, Style]:
    """Styles by name, in file order; a missing or unreadable file is no styles (logged). The file is read
    again only when it changed (every API request asks)."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    return dict(_read_styles(Path(path), st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=8)
def _read_styles(path: Path, size: int, mtime_ns: int) -> dict[str, Style]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f, skipinitialspace=True))
    except FileNotFoundError:
        return {}
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        log.warning("%s is unreadable (%s): no prompt styles", path, e)
        return {}
    styles = {}
    for row in rows:
        name = (row.get("name") or "").strip()
        if name:
            styles[name] = Style(name, row.get("prompt") or "", row.get("negative_prompt") or "")
    return styles
