"""A real HTTP server for API tests: the FastAPI app on uvicorn in a thread on a free 127.0.0.1 port,
and a `requests` session as A1111's client libraries use it (never through a proxy)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator

import requests
from PIL import Image


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """The app on a real uvicorn server in a thread; yields its base URL. The socket is bound before the
    server starts, so no other process can take the port in between."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class Client:
    """`client.post("txt2img", {...})` against /sdapi/v1 (a leading "/" means a full path)."""

    def __init__(self, base: str, auth: tuple[str, str] | None = None):
        self.base = base
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.auth = auth

    def url(self, path: str) -> str:
        return self.base + (path if path.startswith("/") else f"/sdapi/v1/{path}")

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.url(path), timeout=300, **kw)

    def post(self, path: str, body=None, **kw) -> requests.Response:
        return self.session.post(self.url(path), json=body, timeout=300, **kw)


def b64_png(image: Image.Image, data_url: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{text}" if data_url else text


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def info_of(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])
