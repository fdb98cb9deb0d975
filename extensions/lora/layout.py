"""What a LoRA file is, from its tensor names and shapes alone (the safetensors header): its format,
the model family it was trained for, its rank, and whether Easel can apply it.

Kohya/A1111 files name each patched module `lora_unet_<path>` / `lora_te_<path>` (`lora_te1_`,
`lora_te2_` for SDXL's two encoders) with the dots of the path turned into underscores, using either
LDM block names (`input_blocks_1_1_proj_in`) or diffusers ones (`down_blocks_0_attentions_0_proj_in`).
PEFT/diffusers files use dotted paths under `unet.` / `text_encoder.` / `text_encoder_2.`. Each module
then carries one algorithm's tensors: LoRA (`lora_down`/`lora_up`), DoRA (plus `dora_scale`), LyCORIS
LoHa (`hada_*`), LoKr (`lokr_*`), a Tucker LoCon (`lora_mid`) or a full difference (`diff`)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# suffix (after the module name) -> algorithm
LORA_SUFFIXES = {"lora_down.weight", "lora_up.weight", "alpha"}
PEFT_SUFFIXES = {"lora_A.weight", "lora_B.weight", "alpha"}
ALGORITHMS = {
    "lora_down.weight": "lora", "lora_up.weight": "lora", "lora_mid.weight": "tucker",
    "lora_A.weight": "peft", "lora_B.weight": "peft", "dora_scale": "dora",
    "hada_w1_a": "loha", "hada_w1_b": "loha", "hada_w2_a": "loha", "hada_w2_b": "loha", "hada_t1": "loha",
    "hada_t2": "loha",
    "lokr_w1": "lokr", "lokr_w1_a": "lokr", "lokr_w1_b": "lokr", "lokr_w2": "lokr", "lokr_w2_a": "lokr",
    "lokr_w2_b": "lokr", "lokr_t2": "lokr",
    "diff": "full", "alpha": None,
}
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
PEFT_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.")

# Architecture facts a file's names and widths betray (real models; tiny test models only by layout).
_SD_ONLY = re.compile(r"down_blocks_0_attentions|up_blocks_3_|down_blocks_3_|input_blocks_(1|2)_1_"
                      r"|input_blocks_1[01]_|output_blocks_(9|10|11)_")
_XL_ONLY = re.compile(r"transformer_blocks_[1-9]|^lora_te[12]_|^text_encoder_2|label_emb|add_embedding")
_CROSS_ATTN = re.compile(r"attn2_to_[kv]$")
_TEXT_Q = re.compile(r"^(lora_te_|text_encoder_).*self_attn_q_proj$")
CONTEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
TEXT_WIDTH = {768: "sd1", 1024: "sd2"}
ARCH_LABEL = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "sd1/sd2": "SD1/SD2"}


@dataclass(frozen=True)
class Module:
    """One patched module of the file: its name in the file and the tensors it carries."""

    name: str  # "lora_unet_input_blocks_1_1_proj_in" or "unet.down_blocks.0.attentions.0.proj_in"
    tensors: dict[str, tuple[int, ...]]  # suffix -> shape

    @property
    def algorithm(self) -> str:
        kinds = {ALGORITHMS.get(s, "?") for s in self.tensors} - {None}
        if "dora" in kinds:
            return "dora"
        if kinds == {"lora", "tucker"}:
            return "tucker"
        return kinds.pop() if len(kinds) == 1 else "?"


@dataclass(frozen=True)
class Layout:
    format: str  # kohya-ldm | kohya-diffusers | locon | dora | loha | lokr | diffusers | unknown
    family: str  # sd1 | sd2 | sdxl | sd1/sd2 | unknown
    rank: int | None
    modules: tuple[Module, ...] = field(default=(), repr=False)
    error: str | None = None  # why Easel cannot apply it, if it cannot

    @property
    def adapter(self) -> bool:
        """Plain LoRA/LoCon modules load as diffusers (PEFT) adapters; the rest is patched into weights."""
        return all(m.algorithm in ("lora", "peft") for m in self.modules)


def group_modules(shapes: dict[str, tuple[int, ...]]) -> tuple[list[Module], list[str]]:
    """Tensor names -> modules; names that fit no known scheme are returned apart."""
    grouped: dict[str, dict[str, tuple[int, ...]]] = {}
    stray: list[str] = []
    for key, shape in shapes.items():
        if key.startswith(KOHYA_PREFIXES):
            module, _, suffix = key.partition(".")
        elif key.startswith(PEFT_PREFIXES) and ".lora_" in key:
            module, _, suffix = key.partition(".lora_")
            suffix = "lora_" + suffix
        elif key.startswith(PEFT_PREFIXES) and key.endswith(".alpha"):
            module, suffix = key[: -len(".alpha")], "alpha"
        else:
            stray.append(key)
            continue
        if suffix not in ALGORITHMS:
            stray.append(key)
            continue
        grouped.setdefault(module, {})[suffix] = shape
    return [Module(name, tensors) for name, tensors in grouped.items()], stray


def describe(shapes: dict[str, tuple[int, ...]]) -> Layout:
    """Format, family and rank of a LoRA file from its header's tensor shapes."""
    modules, stray = group_modules(shapes)
    if not modules:
        sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
        return Layout("unknown", "unknown", None, (), f"not a LoRA layout Easel knows (keys like {sample})")
    algorithms = Counter(m.algorithm for m in modules)
    fmt = _format(modules, algorithms)
    error = None
    if stray:
        error = f"{len(stray)} tensor(s) of a layout Easel does not know, e.g. {stray[0]!r}"
    elif "?" in algorithms:
        odd = next(m for m in modules if m.algorithm == "?")
        error = f"module {odd.name!r} mixes algorithms ({', '.join(sorted(odd.tensors))})"
    elif len(algorithms) > 1 and set(algorithms) - {"lora", "tucker"}:
        error = f"mixes algorithms {sorted(algorithms)} in one file"
    return Layout(fmt, family(modules), _rank(modules), tuple(modules), error)


def _format(modules: list[Module], algorithms: Counter) -> str:
    top = algorithms.most_common(1)[0][0]
    if top in ("dora", "loha", "lokr"):
        return top
    if top == "peft":
        return "diffusers"
    if top == "tucker" or any(_is_conv_lora(m) for m in modules):
        return "locon"
    if any(m.name.startswith("lora_unet_") and re.search(r"(input|output)_blocks|middle_block", m.name)
           for m in modules):
        return "kohya-ldm"
    return "kohya-diffusers"


def _is_conv_lora(m: Module) -> bool:
    down = m.tensors.get("lora_down.weight")
    return down is not None and len(down) == 4 and down[2:] != (1, 1)


def _rank(modules: list[Module]) -> int | None:
    ranks: Counter = Counter()
    for m in modules:
        t = m.tensors
        for key in ("lora_down.weight", "lora_A.weight", "hada_w1_b", "lokr_w1_b", "lokr_w2_b"):
            if key in t:
                ranks[t[key][0]] += 1
                break
    return ranks.most_common(1)[0][0] if ranks else None


def _in_width(m: Module) -> int | None:
    t = m.tensors
    for key in ("lora_down.weight", "lora_A.weight", "hada_w1_b"):
        if key in t and len(t[key]) >= 2:
            return t[key][1]
    return None


def family(modules: list[Module]) -> str:
    """sd1 / sd2 / sdxl, or sd1/sd2 when the layout says SD but no width tells which, or unknown.

    Block layout first (SDXL has no attention at the first level and deeper transformers; SD has four
    levels), then widths of real models: cross-attention context 768 / 1024 / 2048, text width 768 / 1024,
    and SD1's convolutional `proj_in` against SD2's linear one."""
    names = [m.name.replace(".", "_") for m in modules]
    sd = any(_SD_ONLY.search(n) for n in names)
    xl = any(_XL_ONLY.search(n) for n in names)
    votes: Counter = Counter()
    for m, n in zip(modules, names):
        width = _in_width(m)
        if _CROSS_ATTN.search(n) and width in CONTEXT_WIDTH:
            votes[CONTEXT_WIDTH[width]] += 1
        elif _TEXT_Q.search(n) and width in TEXT_WIDTH:
            votes[TEXT_WIDTH[width]] += 1
        elif n.endswith("proj_in") and (down := m.tensors.get("lora_down.weight") or m.tensors.get("lora_A.weight")):
            votes["sd1" if len(down) == 4 else "sd2"] += 1
    if xl and not sd:
        return "sdxl"
    if sd and not xl:
        votes.pop("sdxl", None)
        return votes.most_common(1)[0][0] if votes else "sd1/sd2"
    if not sd and not xl and votes:
        return votes.most_common(1)[0][0]
    return "unknown"


def fits(lora_family: str, arch: str) -> bool:
    """Whether a LoRA of `lora_family` may go on a model of architecture `arch` (unknown: let shapes decide)."""
    return lora_family == "unknown" or arch in lora_family.split("/")


def mismatch(lora_family: str, arch: str) -> str:
    """'SD1 LoRA on an SDXL model' (the wording of the notice and the infotext)."""
    model = ARCH_LABEL.get(arch, arch.upper())
    article = "an" if model[0] in "AEFHILMNORSX" else "a"
    return f"{ARCH_LABEL.get(lora_family, lora_family)} LoRA on {article} {model} model"
