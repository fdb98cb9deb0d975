"""A1111's prompt syntax, parsed exactly as AUTOMATIC1111's `modules/prompt_parser.py` and
`modules/extra_networks.py` do, so a prompt copied from an A1111 infotext means the same here.

Pure Python (no torch): the UI token counter, the API and the engine all import it.

Covered: emphasis `(a)` x1.1, `[a]` /1.1, `(a:1.3)` (spaces allowed around the number), nesting,
unbalanced brackets (closed at the end), the escapes `\\(` `\\)` `\\[` `\\]` `\\\\`, `BREAK`, and
extra-network tags `<name:arg1:arg2>`. Not covered (A1111 features outside this module's job):
prompt editing `[a:b:0.5]` / alternation `[a|b]`, composable `AND`, `#` comments. Such text is
parsed as A1111's `parse_prompt_attention` parses it when those features are off."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BREAK", "ExtraNetworkCall", "PromptError", "extract_extra_networks", "parse_prompt_attention"]


class PromptError(ValueError):
    """A prompt Easel refuses (a malformed weight, too many tokens); the message says why and names the limit."""


BREAK = ("BREAK", -1.0)  # the marker parse_prompt_attention returns for a chunk break, as A1111 does

# A1111's re_attention, verbatim (modules/prompt_parser.py, v1.6+ allows spaces around the weight)
_RE_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.VERBOSE,
)
_RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)
_RE_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")
_ROUND = 1.1
_SQUARE = 1 / 1.1


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """(fragment, weight) pairs, A1111's algorithm step for step so weights agree to the last bit.

    `BREAK` comes back as ("BREAK", -1.0). Like A1111, an enclosing bracket multiplies that marker
    too: "(a BREAK b)" yields ("BREAK", -1.1), which the chunker then reads as the word "BREAK".
    Neighbours of equal weight are merged; an empty prompt is [("", 1.0)]."""
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in _RE_ATTENTION.finditer(text):
        part, weight = m.group(0), m.group(1)
        if part.startswith("\\"):
            res.append([part[1:], 1.0])
        elif part == "(":
            round_brackets.append(len(res))
        elif part == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), _weight(weight, m.group(0)))
        elif part == ")" and round_brackets:
            multiply_range(round_brackets.pop(), _ROUND)
        elif part == "]" and square_brackets:
            multiply_range(square_brackets.pop(), _SQUARE)
        else:
            for i, piece in enumerate(_RE_BREAK.split(part)):
                if i > 0:
                    res.append(list(BREAK))
                res.append([piece, 1.0])

    for pos in round_brackets:
        multiply_range(pos, _ROUND)
    for pos in square_brackets:
        multiply_range(pos, _SQUARE)
    if not res:
        res = [["", 1.0]]

    i = 0  # merge runs of identical weights
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return [(t, float(w)) for t, w in res]


def _weight(number: str, where: str) -> float:
    """A1111 crashes on "(a:1.2.3)" with a bare float() error; Easel names the fragment instead."""
    try:
        return float(number)
    except ValueError:
        raise PromptError(
            f"invalid emphasis weight {number!r} in {where!r}: expected a number like (word:1.2)"
        ) from None


@dataclass(frozen=True)
class ExtraNetworkCall:
    """One `<name:arg1:arg2>` tag: `<lora:x:0.8>` is ExtraNetworkCall("lora", ("x", "0.8"))."""

    name: str
    args: tuple[str, ...]


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetworkCall]]:
    """The prompt with every tag cut out (replaced by "", as A1111 does) and the tags in order.

    Arguments are the raw strings split on ":"; what they mean is the extension's business."""
    calls: list[ExtraNetworkCall] = []

    def found(m: re.Match) -> str:
        calls.append(ExtraNetworkCall(m.group(1), tuple(m.group(2).split(":"))))
        return ""

    return _RE_EXTRA_NET.sub(found, prompt), calls
