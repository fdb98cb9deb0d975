"""The extension API stays documented and tested: every hookspec has its own "### `name`" section in
docs/extensions.md and an implementation in some test plugin (`def <hook>(` in a tests/test_*.py
file), and every hooktypes dataclass and each of its fields is named in the guide."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from webui import hookspecs, hooktypes

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "extensions.md"
HOOKS = sorted(name for name, obj in vars(hookspecs).items()
               if callable(obj) and getattr(obj, f"{hookspecs.PROJECT}_spec", None) is not None)
TYPES = sorted((obj for obj in vars(hooktypes).values()
                if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == hooktypes.__name__),
               key=lambda t: t.__name__)


def sections(text: str) -> set[str]:
    return set(re.findall(r"^### `(\w+)`\s*$", text, flags=re.MULTILINE))


def hook_test_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((REPO / "tests").glob("test_*.py")) if p.name != Path(__file__).name}


def missing(hooks: list[str], guide: str, tests: dict[str, str]) -> list[str]:
    """What the guide and the tests lack, one line each."""
    found = sections(guide)
    out = [f"hook {h!r}: no '### `{h}`' section in docs/extensions.md" for h in hooks if h not in found]
    out += [f"hook {h!r}: no test plugin implements it (no 'def {h}(' in tests/test_*.py)"
            for h in hooks if not any(f"def {h}(" in text for text in tests.values())]
    return out


def test_there_are_hooks_and_types_to_check():
    assert {"prepare_pipeline", "step_end", "addhooks"} <= set(HOOKS) and len(HOOKS) >= 20
    assert {"StepState", "ImageSaveParams", "ExtraNetworkType"} <= {t.__name__ for t in TYPES}


def test_every_hook_has_a_doc_section_and_a_test():
    problems = missing(HOOKS, GUIDE.read_text(), hook_test_sources())
    assert not problems, "\n".join(problems)


def test_the_check_fails_for_a_hook_nobody_documented_or_tested():
    problems = missing([*HOOKS, "fake_hook_nobody_wrote"], GUIDE.read_text(), hook_test_sources())
    assert problems == ["hook 'fake_hook_nobody_wrote': no '### `fake_hook_nobody_wrote`' section in docs/extensions.md",
                        "hook 'fake_hook_nobody_wrote': no test plugin implements it "
                        "(no 'def fake_hook_nobody_wrote(' in tests/test_*.py)"]


def test_no_section_documents_a_hook_or_type_that_does_not_exist():
    known = set(HOOKS) | {t.__name__ for t in TYPES}
    stale = sorted(sections(GUIDE.read_text()) - known)
    assert not stale, f"docs/extensions.md has sections for names the API does not have: {stale}"


def test_every_hooktypes_dataclass_and_field_is_documented():
    guide = GUIDE.read_text()
    documented = sections(guide)
    problems = [f"{t.__name__}: no '### `{t.__name__}`' section" for t in TYPES if t.__name__ not in documented]
    for t in TYPES:
        section = guide.split(f"### `{t.__name__}`", 1)[-1].split("\n### ", 1)[0]
        problems += [f"{t.__name__}.{f.name}: not named in its section" for f in dataclasses.fields(t)
                     if f"`{f.name}`" not in section]
    assert not problems, "\n".join(problems)
