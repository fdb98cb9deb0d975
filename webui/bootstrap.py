"""Set-up behind the README's two commands (standard library only: it runs before anything is installed).

`python launch.py` creates `.venv` on first run, installs Easel with every dependency pinned by
`constraints.txt`, then runs `easel serve`. `python launch.py --tests` does the same with the test
extras and runs pytest. Reinstalls happen only when pyproject.toml or constraints.txt change."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("EASEL_VENV", ROOT / ".venv")).resolve()
MIN_PYTHON = (3, 11)
CHROMIUM = Path("/usr/bin/chromium")  # diffusers 0.42 has no Python 3.10 release


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _fingerprint(extras: tuple[str, ...]) -> dict:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return {"inputs": digest.hexdigest(), "extras": sorted(extras)}


def ensure_environment(extras: tuple[str, ...] = ()) -> Path:
    """The project virtualenv's python, created and installed if out of date."""
    if sys.version_info < MIN_PYTHON:
        sys.exit(f"Easel needs Python {'.'.join(map(str, MIN_PYTHON))}+; this is {sys.version.split()[0]}")
    stamp = VENV / "easel-install.json"
    want = _fingerprint(extras)
    try:
        have = json.loads(stamp.read_text())
        if have["inputs"] == want["inputs"] and set(extras) <= set(have["extras"]) and venv_python().exists():
            return venv_python()
        want["extras"] = sorted(set(extras) | set(have["extras"]))
    except (OSError, ValueError, KeyError):
        pass
    if not venv_python().exists():
        print(f"easel: creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = f".[{','.join(want['extras'])}]" if want["extras"] else "."
    print(f"easel: installing {target} with pinned dependencies (first run takes a few minutes)", flush=True)
    cmd = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*cmd, "-c", "constraints.txt", "-e", target], cwd=ROOT, check=True)
    stamp.write_text(json.dumps(want))
    return venv_python()


def ensure_browser() -> None:
    """The browser tests drive Debian's chromium (never a browser downloaded by Playwright): install it
    with apt-get when it is missing and this is root on Debian; otherwise say how."""
    if CHROMIUM.exists() or not sys.platform.startswith("linux"):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"easel: the browser tests need {CHROMIUM}: `sudo apt-get install chromium`", flush=True)
        return
    print("easel: installing Debian's chromium for the browser tests (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    tests = "--tests" in argv
    skip_install = "--skip-install" in argv
    rest = [a for a in argv if a not in ("--tests", "--skip-install")]
    python = venv_python() if skip_install else ensure_environment(("test",) if tests else ())
    if tests and not skip_install:
        ensure_browser()
    module = ["-m", "pytest", *rest] if tests else ["-m", "webui.cli", "serve", *rest]
    os.chdir(ROOT)
    if os.name == "nt":  # no exec on Windows
        return subprocess.run([str(python), *module]).returncode
    os.execv(str(python), [str(python), *module])
    return 0
