"""A cap on request bodies for the API routes (a 50 MB JSON body is refused with 413 before it is read
into memory). The Gradio UI under `/` has its own upload limit (`max_file_size`)."""

from __future__ import annotations

import json

MAX_BODY_BYTES = 40 * 1024 * 1024  # a 4096x4096 PNG as base64 is ~30 MB at worst
LIMITED_PREFIXES = ("/sdapi/", "/easel/")


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: checks Content-Length, and counts the bytes of bodies sent without one."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIXES):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send, int(length))
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, seen)

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps({"error": "RequestTooLarge", "detail": f"request body of {size} bytes or more is over "
                           f"the limit of {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
