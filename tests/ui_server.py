"""A real `easel serve` in a subprocess on a free port, for the server, client and browser tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URL_LINE = re.compile(r"Running on local URL:\s+(http://\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`Server(data_dir, "--gradio-auth", "u:p")` starts serving; `.url` once ready; `.stop()` sends
    Ctrl+C (SIGINT) and returns the exit status. `.output` is everything printed so far."""

    def __init__(self, data_dir: Path, *flags: str, port: int | None = None, timeout: float = 120, env: dict | None = None):
        self.port = port or free_port()
        cmd = [sys.executable, "-m", "webui.cli", "serve", "--data-dir", str(data_dir), "--port", str(self.port), *flags]
        environ = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url: str | None = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or self.url is None:
            self.stop()
            raise RuntimeError(f"easel serve did not start:\n{self.output}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            m = URL_LINE.search(line)
            if m and self.url is None:
                self.url = m[1]
                self._ready.set()
        self._ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.output:
                return True
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def data_dir_with(tmp: Path, checkpoints: dict[str, Path]) -> Path:
    """A data dir whose checkpoint folder links `{file name: checkpoint}`."""
    folder = tmp / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in checkpoints.items():
        (folder / name).symlink_to(path)
    return tmp
