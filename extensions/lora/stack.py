"""A job's LoRA stack: what the prompt tags and the UI/API stack ask for, and what of it this model
can take (found, readable, the model's architecture), with a reason for each LoRA left out.

Tag arguments follow A1111 (`extensions-builtin/Lora/extra_networks_lora.py`): `<lora:name>` (1.0),
`<lora:name:w>` (both parts), `<lora:name:te:unet>` (text encoder first, then UNet), and the named
forms `te=`, `unet=` (`dyn=` is accepted and ignored). `<lyco:...>` is the same."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from extensions.lora.layout import fits, mismatch
from extensions.lora.library import LoraEntry, LoraLibrary

TAGS = ("lora", "lyco")
SLOT = re.compile(r"lora_(\d+)")  # the UI section's slots: "lora_1" (a name) with "weight_1"


@dataclass(frozen=True)
class StackItem:
    name: str  # as the user wrote it
    te: float
    unet: float


@dataclass
class Planned:
    entry: LoraEntry
    label: str  # the name as first written (the infotext's "Lora hashes" key)
    te: float
    unet: float

    @property
    def off(self) -> bool:
        return self.te == 0 and self.unet == 0


@dataclass
class Plan:
    loras: list[Planned] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, short reason for the infotext)
    notices: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str, notice: str) -> None:
        self.skipped.append((name, reason))
        self.notices.append(notice)


def _number(text, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{what}: {text!r} is not a number")
    return value


def from_tag(tag: str, args: tuple[str, ...]) -> StackItem:
    """A1111's reading of `<lora:name:te:unet>` and its named `te=`/`unet=` forms."""
    where = f"<{tag}:{':'.join(args)}>"
    positional = [a for a in args if "=" not in a]
    named = dict(a.split("=", 1) for a in args if "=" in a)
    if not positional or not positional[0].strip():
        raise ValueError(f"{where}: the LoRA name is missing")
    te = _number(positional[1], f"{where} weight") if len(positional) > 1 else 1.0
    te = _number(named["te"], f"{where} te weight") if "te" in named else te
    unet = _number(positional[2], f"{where} unet weight") if len(positional) > 2 else te
    unet = _number(named["unet"], f"{where} unet weight") if "unet" in named else unet
    return StackItem(positional[0].strip(), te, unet)


def from_stack(item) -> StackItem:
    """One `request.extensions["lora"]["stack"]` entry: {"name", "weight"=1, optional "te", "unet"}."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise ValueError(f"LoRA stack entries are {{'name': str, 'weight': number}}, got {item!r}")
    weight = _number(item.get("weight", 1.0), f"LoRA {item['name']!r} weight")
    te = _number(item["te"], f"LoRA {item['name']!r} te weight") if "te" in item else weight
    unet = _number(item["unet"], f"LoRA {item['name']!r} unet weight") if "unet" in item else weight
    return StackItem(item["name"].strip(), te, unet)


def from_slots(opts: dict) -> list[StackItem]:
    """The UI section's slots in slot order: `lora_<n>` a name (empty: an unused slot), `weight_<n>` its
    weight for both parts (1 when absent)."""
    numbered = sorted((int(m[1]), key) for key in opts if (m := SLOT.fullmatch(key)))
    items = []
    for n, key in numbered:
        name = opts[key]
        if name is None or (isinstance(name, str) and not name.strip()):
            continue
        if not isinstance(name, str):
            raise ValueError(f"extensions.lora.{key} must be a LoRA name, got {name!r}")
        weight = opts.get(f"weight_{n}")
        weight = _number(1.0 if weight is None else weight, f"LoRA {name.strip()!r} weight")
        items.append(StackItem(name.strip(), weight, weight))
    return items


def from_tags(request) -> list[StackItem]:
    """The prompt's `<lora:...>` / `<lyco:...>` tags, in order (a job's stack: these, then `from_fields`)."""
    return [from_tag(tag, call.args) for tag in TAGS for call in request.extra_networks.get(tag, [])]


def from_fields(request) -> list[StackItem]:
    """What the request asks for besides prompt tags: the API stack, then the UI section's slots. Unlike
    tags, these are not in the prompt, so the infotext records them (`Lora stack`)."""
    opts = request.extensions.get("lora") or {}
    if not isinstance(opts, dict):
        raise ValueError("extensions.lora must be an object like {'stack': [{'name': ..., 'weight': ...}]}")
    stack = opts.get("stack") or []
    if not isinstance(stack, list):
        raise ValueError("extensions.lora.stack must be a list of {'name': ..., 'weight': ...}")
    return [from_stack(i) for i in stack] + from_slots(opts)


def plan(items: list[StackItem], library: LoraLibrary, arch: str) -> Plan:
    """The LoRAs to apply, one per file (a file named twice gets the sum of its weights)."""
    out = Plan()
    by_path: dict[str, Planned] = {}
    refused: set[str] = set()
    for item in items:
        entry = library.find(item.name)
        if entry is None:
            if item.name not in {name for name, _ in out.skipped}:
                out.skip(item.name, "not found", f"LoRA '{item.name}' not found in models/Lora; skipped")
            continue
        key = str(entry.path)
        if key in refused:
            continue
        if key in by_path:
            same = by_path[key]
            same.te, same.unet = same.te + item.te, same.unet + item.unet
            continue
        if entry.error or not fits(entry.family, arch):
            refused.add(key)
        if entry.error:
            out.skip(item.name, entry.format if entry.format == "pickle" else "unreadable",
                     f"LoRA '{item.name}' ({entry.path}) skipped: {entry.error}")
        elif not fits(entry.family, arch):
            reason = mismatch(entry.family, arch)
            out.skip(item.name, reason, f"LoRA '{item.name}' skipped: {reason}")
        else:
            by_path[key] = Planned(entry, item.name, item.te, item.unet)
            out.loras.append(by_path[key])
    return out
