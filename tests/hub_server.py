"""A small stand-in for the Hugging Face Hub's file endpoint, on 127.0.0.1, for download tests.

It speaks the part of the Hub's contract a downloader meets: `/{repo}/resolve/{rev}/{file}`,
Content-Length, Range (206 + Content-Range, 416 past the end), the LFS sha256 as ETag and
X-Linked-Etag, and optionally the 302 to a CDN that answers with a non-sha ETag. Knobs break it on
purpose: drop the connection mid-body, serve wrong bytes, ignore Range, stall before answering."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")


@dataclass
class Knobs:
    drop_after: int | None = None  # close the connection after this many body bytes
    wrong_bytes: bool = False  # flip every byte, keep the length and the advertised sha256
    ignore_range: bool = False  # answer 200 with the whole file to a Range request
    redirect: bool = False  # like the Hub: 302 with X-Linked-Etag, then the CDN serves the bytes
    advertise_sha: bool = True  # send the sha256 as ETag / X-Linked-Etag
    stall: bool = False  # accept, then say nothing until the server stops


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class FakeHub:
    """`with FakeHub(tmp_path) as hub:` serves files added with `add`; `hub.seen` lists requests."""

    root: Path
    knobs: Knobs = field(default_factory=Knobs)
    seen: list[Seen] = field(default_factory=list)

    def add(self, repo: str, filename: str, data: bytes) -> str:
        path = self.root / repo / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def gets(self, path_part: str = "/resolve/") -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and path_part in s.path]

    def __enter__(self) -> "FakeHub":
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # releases stalled handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _file(self, repo: str, filename: str) -> Path | None:
        path = (self.root / repo / filename).resolve()
        return path if path.is_file() and self.root.resolve() in path.parents else None

    def _by_sha(self, sha: str) -> Path | None:
        for path in self.root.rglob("*"):
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha:
                return path
        return None


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: a dropped body is a closed socket

        def log_message(self, format, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.seen.append(Seen(self.command, path, self.headers.get("Range"), self.headers.get("Authorization")))
            if hub.knobs.stall:
                hub._stop.wait(30)
                return
            if m := RESOLVE.match(path):
                file = hub._file(m["repo"], m["file"])
                if file is None:
                    return self._error(404, "EntryNotFound")
                sha = hashlib.sha256(file.read_bytes()).hexdigest()
                if hub.knobs.redirect:
                    return self._redirect(sha, file.stat().st_size)
                return self._send_file(file, sha, f'"{sha}"', body)
            if m := CDN.match(path):
                file = hub._by_sha(m["sha"])
                if file is None:
                    return self._error(404, "NotFound")
                return self._send_file(file, m["sha"], '"d41d8cd98f00b204e9800998ecf8427e-3"', body)
            self._error(404, "RepoNotFound")

        def _error(self, code: int, hub_code: str) -> None:
            self.send_response(code)
            self.send_header("X-Error-Code", hub_code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _redirect(self, sha: str, size: int) -> None:
            self.send_response(302)
            self.send_header("Location", f"{hub.url}/cdn/{sha}")
            if hub.knobs.advertise_sha:
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(size))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send_file(self, file: Path, sha: str, etag: str, body: bool) -> None:
            data = file.read_bytes()
            if hub.knobs.wrong_bytes:
                data = bytes(b ^ 0xFF for b in data)
            start, status = 0, 200
            wanted = self.headers.get("Range")
            if wanted and not hub.knobs.ignore_range:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)
                if m is None or int(m[1]) >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, status = int(m[1]), 206
                end = min(int(m[2]), len(data) - 1) if m[2] else len(data) - 1
                data = data[: end + 1]
            self.send_response(status)
            self.send_header("Content-Length", str(len(data) - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{file.stat().st_size}")
            if hub.knobs.advertise_sha:
                self.send_header("ETag", etag)
                if not hub.knobs.redirect:
                    self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not body:
                return
            payload = data[start:]
            if hub.knobs.drop_after is not None:
                payload = payload[: hub.knobs.drop_after]
            self.wfile.write(payload)
            self.wfile.flush()

    return Handler
