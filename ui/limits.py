"""Limits on what a client may send the web chat: no uploads, small request bodies.

The app has no file input, so ``/gradio_api/upload`` is refused outright (it
once accepted 60 MB from anyone), and so is a request naming a file (a
``gradio.FileData`` object anywhere in its JSON: a client-supplied chat
history once made the server copy a file from disk into Gradio's cache).
Every other request body is capped at MAX_REQUEST_BYTES (a question is at
most 2,000 characters), checked before the app reads it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_REQUEST_BYTES = 1 << 20  # 1 MiB: a question, its history and Gradio's envelope fit many times over


class RequestLimits:
    """ASGI middleware: 403 for uploads, 413 for a body over ``max_bytes`` (buffered, then replayed)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/").endswith("/upload"):
            await _refuse(send, 403, "This app accepts no file uploads.")
            return
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            await _refuse(send, 413, f"Request body over the {self.max_bytes:,}-byte limit.")
            return
        # A body without a (truthful) length is read here, up to the limit, before the app sees it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, f"Request body over the {self.max_bytes:,}-byte limit.")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"application/json" in headers.get(b"content-type", b"") and _names_a_file(body):
            await _refuse(send, 400, "This app accepts only text; a request naming a file is refused.")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _names_a_file(body: bytes) -> bool:
    """Whether a JSON body holds a Gradio file reference (``{"meta": {"_type": "gradio.FileData"}}``)."""
    if b"gradio.FileData" not in body:
        return False
    try:
        todo = [json.loads(body)]
    except ValueError:
        return False  # not JSON: the app rejects it itself
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            meta = value.get("meta")
            if isinstance(meta, dict) and meta.get("_type") == "gradio.FileData":
                return True
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return False


async def _refuse(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
