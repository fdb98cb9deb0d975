"""`easel download NAME`: fetch one well-known model file into its A1111 folder, resumably and verified.

Written on the standard library's urllib, not `huggingface_hub.hf_hub_download`, because that one
fights what this command promises: it never checks the content against a sha256 (the etag only names
cache blobs); `local_dir` keeps the repository's file name and writes `.cache/huggingface/` metadata
beside the models, where we want A1111 names; it insists on the Hub's `X-Repo-Commit` header, may
switch to the Xet protocol, and retries with backoff, the opposite of failing fast when offline. The
Hub's plain HTTP contract is small: `resolve` URL, redirect to a CDN, `Range`, and the LFS sha256 in
`X-Linked-Etag`. That is all this module needs, and a tiny local server can stand in for it in tests.

Data goes to `<dest>.partial` beside the destination; a rerun resumes it with `Range`. Only a file
whose sha256 matches (the catalog's, else the server's) is renamed into place."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import Message
from pathlib import Path

from tqdm import tqdm

from webui.fileio import safe_child
from webui.models.download_catalog import CATALOG, SHA256_RE, CatalogEntry
from webui.settings import Paths

DEFAULT_ENDPOINT = "https://huggingface.co"
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # as huggingface_hub reads HF_HUB_OFFLINE
CHUNK = 1024 * 1024


class DownloadError(Exception):
    """A download that cannot go on; the message says why and what to do, for a person to read."""


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now: huggingface_hub reads it once at import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in TRUE_VALUES


def resolve_endpoint(endpoint: str | None = None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def find_entry(name: str, catalog: Mapping[str, CatalogEntry] = CATALOG) -> CatalogEntry:
    try:
        return catalog[name]
    except KeyError:
        raise DownloadError(f"unknown model {name!r}; known names: {', '.join(sorted(catalog))}") from None


def download(
    name: str,
    paths: Paths,
    *,
    endpoint: str | None = None,
    progress: bool = True,
    token: str | None = None,
    catalog: Mapping[str, CatalogEntry] = CATALOG,
    offline: bool | None = None,
    timeout: float = 10.0,
) -> Path:
    """Download catalog entry `name` into its folder under `paths` and return the final path.

    A destination already there with the right sha256 is kept without touching the network (so this
    succeeds offline too); one with a different sha256 is never overwritten. `offline=None` reads
    HF_HUB_OFFLINE; `token` defaults to HF_TOKEN. `timeout` bounds the connect and every read stall.
    Raises DownloadError for every failure a user can meet."""
    entry = find_entry(name, catalog)
    folder = paths.folder(entry.folder)
    try:
        dest = safe_child(folder, entry.dest_name)
    except ValueError as e:
        raise DownloadError(f"catalog entry {name!r} has an unsafe destination: {e}") from None
    if _verified_existing(dest, entry):
        return dest
    url = entry.url(resolve_endpoint(endpoint))
    if is_offline() if offline is None else offline:
        raise DownloadError(
            f"offline: HF_HUB_OFFLINE is set; download {name} by hand from {url} into {folder} as {dest.name}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    _fetch(entry, url, partial, token=token or os.environ.get("HF_TOKEN"), timeout=timeout, progress=progress)
    os.replace(partial, dest)
    return dest


def _verified_existing(dest: Path, entry: CatalogEntry) -> bool:
    """True when `dest` is already the wanted file. Without a catalog sha256 an existing file is
    trusted: it was verified when it arrived, or the user put it there on purpose."""
    if not dest.is_file():
        return False
    if entry.sha256 is None:
        return True
    size = dest.stat().st_size
    got = _sha256(dest) if entry.size in (None, size) else None
    if got == entry.sha256:
        return True
    found = f"sha256 {got}" if got else f"{size} bytes, not {entry.size}"
    raise DownloadError(
        f"{dest} already exists but is not {entry.name} ({found}, expected sha256 {entry.sha256}); "
        "it was left alone: move it away and run the download again"
    )


def _fetch(entry: CatalogEntry, url: str, partial: Path, *, token: str | None, timeout: float, progress: bool) -> None:
    """Bring `partial` to the complete, verified file, resuming what an earlier run left."""
    have = partial.stat().st_size if partial.is_file() else 0
    if entry.size is not None and have > entry.size:
        partial.unlink()
        have = 0
    if have and have == entry.size and entry.sha256:  # a run that stopped before the rename
        if _sha256(partial) == entry.sha256:
            return
        partial.unlink()
        have = 0
    hops: list[Message] = []
    try:
        response = _open(url, have, token, timeout, hops)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial is as long as the file or longer: start over
            partial.unlink()
            return _fetch(entry, url, partial, token=token, timeout=timeout, progress=progress)
        raise DownloadError(_http_message(e.code, e.reason, url)) from None
    except ValueError as e:  # urllib's answer to an endpoint without http(s)://
        raise DownloadError(f"invalid URL {url} ({e}); check the endpoint or HF_ENDPOINT") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"cannot reach {url} ({reason}); this machine looks offline. Download {entry.name} by hand "
            f"from that URL into {partial.parent} as {entry.dest_name}, or set HF_ENDPOINT to a reachable mirror"
        ) from None
    with response:
        server_sha = _server_sha([*hops, response.headers])
        if entry.sha256 and server_sha and server_sha != entry.sha256:
            raise DownloadError(
                f"{url} changed upstream: the server reports sha256 {server_sha} but the catalog expects "
                f"{entry.sha256} for {entry.name}; nothing was downloaded"
            )
        start, total = _start_and_total(response, have, url)
        hasher = _sha256_prefix(partial, start)
        written = _stream(response, partial, start, total, hasher, progress, entry.dest_name)
    want = total if total is not None else entry.size
    if want is not None and written < want:
        raise DownloadError(
            f"download of {entry.name} from {url} ended early at {written} of {want} bytes; "
            "run the same command again to resume"
        )
    expected, source = (entry.sha256, "catalog") if entry.sha256 else (server_sha, "server")
    got = hasher.hexdigest()
    if (expected and got != expected) or (entry.size is not None and written != entry.size):
        partial.unlink()
        raise DownloadError(
            f"checksum mismatch for {entry.dest_name} from {url}: got {written} bytes with sha256 {got}, "
            f"{source} expects {entry.size or '?'} bytes with sha256 {expected or '?'}; "
            "the partial file was deleted, run the download again"
        )
    # With no sha256 anywhere (a plain git file, not LFS) the length check is all there is.


class _RecordRedirects(urllib.request.HTTPRedirectHandler):
    """Keeps each redirect's headers: the Hub puts the sha256 on the 302, not on the CDN's answer."""

    def __init__(self, hops: list[Message]):
        self.hops = hops

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.hops.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, have: int, token: str | None, timeout: float, hops: list[Message]):
    request = urllib.request.Request(url, headers={"User-Agent": "easel-download", "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")  # kept across redirects by urllib
    if token:
        # Unredirected: the CDN gets a signed URL and must not see the user's token.
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(_RecordRedirects(hops))
    return opener.open(request, timeout=timeout)


def _http_message(code: int, reason: str, url: str) -> str:
    if code in (401, 403):
        return f"HTTP {code} from {url}: the repository is gated, private or missing; pass a token or set HF_TOKEN"
    if code == 404:
        return f"HTTP 404 from {url}: no such repository, revision or file"
    return f"HTTP {code} {reason} from {url}"


def _server_sha(headers: list[Message]) -> str | None:
    """The first sha256-shaped X-Linked-Etag or ETag along the redirect chain (LFS files only)."""
    for h in headers:
        for key in ("X-Linked-Etag", "ETag"):
            value = (h.get(key) or "").removeprefix("W/").strip('"').lower()
            if SHA256_RE.match(value):
                return value
    return None


def _start_and_total(response, have: int, url: str) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's full size. A 200 to a Range request means
    the server ignored it, so the body is the whole file and the partial is rewritten."""
    if response.status == 206:
        unit, _, spec = (response.headers.get("Content-Range") or "").partition(" ")
        span, _, size = spec.partition("/")
        first = span.partition("-")[0]
        if unit != "bytes" or not first.isdigit() or int(first) != have:
            raise DownloadError(f"{url} answered range {spec or '?'} to a request for bytes {have}-")
        return have, int(size) if size.isdigit() else None
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _stream(response, partial: Path, start: int, total: int | None, hasher, progress: bool, label: str) -> int:
    """Append the body to `partial` from `start`; returns the file's length. Bytes received before an
    interruption stay on disk for the next run."""
    written = start
    bar = tqdm(
        total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
        desc=label, file=sys.stderr, disable=not progress,
    )
    with bar, open(partial, "r+b" if start else "wb") as f:
        f.seek(start)
        f.truncate()
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as e:
                f.flush()
                raise DownloadError(
                    f"download of {label} interrupted after {written} of {total or '?'} bytes ({e!r}); "
                    "run the same command again to resume"
                ) from None
            if not chunk:
                break
            try:
                f.write(chunk)
            except OSError as e:  # disk full, quota: no point in resuming blindly
                raise DownloadError(f"cannot write {partial}: {e}") from None
            hasher.update(chunk)
            written += len(chunk)
            bar.update(len(chunk))
        f.flush()
        os.fsync(f.fileno())
    return written


def _sha256_prefix(path: Path, length: int | None):
    """A sha256 object fed the first `length` bytes of `path` (all of it for None)."""
    hasher = hashlib.sha256()
    if length != 0:
        with open(path, "rb") as f:
            remaining = length
            while chunk := f.read(CHUNK if remaining is None else min(CHUNK, remaining)):
                hasher.update(chunk)
                if remaining is not None:
                    remaining -= len(chunk)
    return hasher


def _sha256(path: Path) -> str:
    return _sha256_prefix(path, None).hexdigest()
