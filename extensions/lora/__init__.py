"""Built-in extension: LoRA stacks (`<lora:name:weight>` in prompts, or a stack from the UI/API), for
every common file format, through the public hooks only (docs/lora.md is the user's guide).

Per-request options live in `request.extensions["lora"]`:
    {"stack": [{"name": "<file, alias or hash>", "weight": 0.8, "te": optional, "unet": optional}]}
and the UI section's slots, {"lora_1": "<name>", "weight_1": 0.8, "lora_2": ...} (`ui.py`).
After `prepare_pipeline` it also holds what the job did: "applied" ([{name, hash}]) and "skipped"
([{name, reason}]), which `infotext_params` writes as `Lora hashes` / `Lora skipped`."""

from __future__ import annotations

import re

from extensions.lora import adapters, ui
from extensions.lora.library import library_for
from extensions.lora.session import Active, StackSession, drop_stale_fused
from extensions.lora.stack import Plan, StackItem, from_fields, from_tags, plan
from extensions.lora.ui import tag_name
from webui import hookimpl
from webui.hooktypes import ExtraNetworkType, Setting, UISection

NAME = "lora"
__version__ = "1.0"
FUSE = "lora_fuse"
_TAG = re.compile(r"<(lora|lyco):([^:>]+)")
_HASH_SYMBOLS = str.maketrans("", "", ":,")  # A1111 strips these from the names in "Lora hashes"


@hookimpl
def register_extra_networks(register):
    register(ExtraNetworkType(NAME, "LoRA", items=lambda manager: library_for(manager).items(),
                              refresh=lambda manager: library_for(manager).refresh()))
    register(ExtraNetworkType("lyco", "LyCORIS (same as <lora:...>)"))  # A1111's older tag for LyCORIS files


@hookimpl
def register_settings(register):
    register(Setting(FUSE, False, "Fuse LoRAs into the weights", section="LoRA",
                     help="Steps as fast as without LoRAs. A new stack or new weights are folded in first (a "
                          "fraction of a step); the next job with the same stack reuses them at no cost. Holds a "
                          "second copy of the patched layers; jobs without LoRAs still get the base weights exactly."))


@hookimpl
def ui_section(tab, register, engine):
    """The stack's slots and the extra-networks browser; inpaint shares img2img's section."""
    if tab in ("txt2img", "img2img", "inpaint"):
        register(UISection(NAME, "LoRA", lambda: ui.build_section(tab, engine.manager)))


@hookimpl(wrapper=True)
def prepare_pipeline(pipeline, request, model, manager, notices):
    fields = from_fields(request)  # the API stack, then the UI section's slots
    items = from_tags(request) + fields
    if not hasattr(pipeline, "load_lora_weights"):  # a job_pipeline without diffusers' LoRA mixin
        pipeline = model.pipeline  # the same shared modules, with the mixin
    state = adapters.state_for(pipeline)
    drop_stale_fused(adapters.loaded_models())
    if state.unfinished is not None:  # a previous job's undo failed: finish it before running anything
        state.unfinished.undo()
    if not items:
        _forget_results(request)  # an echoed request must not bring another job's hashes into this infotext
        return (yield)
    library = library_for(manager)
    stack_plan = plan(items, library, model.family.arch)
    session = StackSession(pipeline, state)
    try:
        active = _load(pipeline, state, stack_plan)
        notices.extend(stack_plan.notices)
        _record(request, library, stack_plan, fields)
        adapters.evict(pipeline, state, keep={str(p.entry.path) for p in stack_plan.loras})
        session.apply(active, fuse=_fuse(request))
        return (yield)
    finally:
        session.undo()


def _load(pipeline, state, stack_plan: Plan) -> list[Active]:
    """Load each planned file (cached per model); a file that cannot go on this model is skipped with a
    notice naming it, and the job runs without it."""
    active, kept = [], []
    for planned in stack_plan.loras:
        if planned.off:  # weight 0: nothing to compute, and the base output stays bit for bit
            kept.append(planned)
            continue
        try:
            loaded = adapters.load(pipeline, state, planned.entry)
        except adapters.LoadError as e:
            stack_plan.skip(planned.label, "does not fit this model", f"LoRA '{planned.label}' skipped: {e}")
            continue
        kept.append(planned)
        active.append(Active(loaded, planned.te, planned.unet))
    stack_plan.loras = kept
    return active


def _forget_results(request) -> None:
    opts = request.extensions.get(NAME)
    if isinstance(opts, dict) and ("applied" in opts or "skipped" in opts or "stack_tags" in opts):
        request.extensions[NAME] = {k: v for k, v in opts.items() if k not in ("applied", "skipped", "stack_tags")}


def _fuse(request) -> bool:
    value = request.override_settings.get(FUSE, False)
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")


def _record(request, library, stack_plan: Plan, fields: list[StackItem]) -> None:
    """What the job applied and skipped, for `infotext_params` (a new dict: the caller's stays as it was),
    and the LoRAs from the stack/slots as tags (found ones only), which the prompt does not show."""
    applied = [{"name": p.label, "hash": library.with_hash(p.entry)[:12]} for p in stack_plan.loras]
    skipped = [{"name": name, "reason": reason} for name, reason in stack_plan.skipped]
    tags = []
    for item in fields:
        entry = library.find(item.name)
        if entry is not None:
            weights = _weight(item.te) if item.te == item.unet else f"{_weight(item.te)}:{_weight(item.unet)}"
            tags.append(f"<lora:{tag_name(library, entry)}:{weights}>")
    request.extensions[NAME] = {**(request.extensions.get(NAME) or {}), "applied": applied, "skipped": skipped,
                                "stack_tags": tags}


def _weight(value: float) -> str:
    return f"{value:g}"


@hookimpl
def infotext_params(request):
    done = request.extensions.get(NAME) or {}
    hashes = {d["name"].translate(_HASH_SYMBOLS): d["hash"] for d in done.get("applied") or []}
    skipped = [f"{d['name'].translate(_HASH_SYMBOLS)}: {d['reason']}" for d in done.get("skipped") or []]
    return {"Lora hashes": ", ".join(f"{k}: {v}" for k, v in hashes.items()) or None,
            "Lora skipped": ", ".join(skipped) or None,
            "Lora stack": " ".join(done.get("stack_tags") or []) or None}


@hookimpl
def infotext_pasted(params, request, manager, notices):
    """The tags are in the pasted prompt already (A1111 keeps them there). Like A1111, a tag whose LoRA is
    installed under another name but has the recorded hash is renamed to the local file; LoRAs found
    neither way are named in a notice."""
    raw = params.pop("Lora hashes", None)
    params.pop("Lora skipped", None)
    stack_tags = params.pop("Lora stack", "")
    if stack_tags:  # LoRAs the UI's slots or an API stack added: back as tags, which give the same picture
        request.prompt = f"{request.prompt} {stack_tags}".strip()
    hashes = {}
    for part in (raw or "").split(","):
        name, _, digest = part.partition(":")
        if name.strip() and digest.strip():
            hashes[name.strip()] = digest.strip()
    if manager is None:
        return
    library = library_for(manager)

    def local(m: re.Match) -> str:
        name = m.group(2)
        if library.find(name) is not None or name not in hashes:
            return m.group(0)
        entry = library.find_hash(hashes[name])
        return f"<{m.group(1)}:{entry.name}" if entry is not None else m.group(0)

    request.prompt = _TAG.sub(local, request.prompt)
    request.negative_prompt = _TAG.sub(local, request.negative_prompt)
    wanted = dict.fromkeys(m.group(2) for text in (request.prompt, request.negative_prompt) for m in _TAG.finditer(text))
    wanted.update(dict.fromkeys(n for n in hashes if n not in wanted and library.find_hash(hashes[n]) is None))
    for name in wanted:
        if library.find(name) is None:
            known = f" (hash {hashes[name]})" if name in hashes else ""
            notices.append(f"LoRA '{name}'{known} is not in models/Lora; the image used it")


@hookimpl
def model_unloaded(model):
    adapters.forget(model.pipeline)

