"""Huge pages for PyTorch's CPU tensors: on unless the user said otherwise, and only where it can still
take effect (before torch is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from webui.cpu_memory import VARIABLE, prefer_huge_pages

PROBE = ("import json, os, sys; from webui.cpu_memory import prefer_huge_pages; done = prefer_huge_pages(); "
         "import torch; print(json.dumps([done, os.environ.get('THP_MEM_ALLOC_ENABLE')]))")


def probe(env_value: str | None) -> list:
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    if env_value is not None:
        env[VARIABLE] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_fresh_process_turns_huge_pages_on_before_torch_loads():
    assert probe(None) == [True, "1"]


def test_the_users_own_setting_is_kept():
    assert probe("0") == [True, "0"]


def test_too_late_once_torch_is_imported_and_the_environment_is_left_alone():
    import torch  # noqa: F401  (the test process has it already; made explicit)

    env: dict[str, str] = {}
    assert prefer_huge_pages(env) is False and env == {}
