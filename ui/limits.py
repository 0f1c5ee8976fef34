"""What a client may ask of the server: the chat, its API, the page's own assets, and nothing else.

:class:`RequestLimits` is ASGI middleware in front of the whole app (the JSON
API and the Gradio page mounted on it). It checks each request as parsed,
never by matching text in it:

- **Paths.** Only the routes the page, ``gradio_client`` and ``/v1`` use are
  served (:data:`GET_PATHS`, :data:`POST_PATHS`); anything else is 404. So
  Gradio's monitoring pages (``/monitoring*``: event analytics for anyone, a
  secret URL on the console), uploads (``/gradio_api/upload``, which once took
  60 MB from anyone), recordings (``/gradio_api/process_recording``), files
  (``/gradio_api/file=``), its proxy and its development routes are never reached.
- **Bodies.** At most MAX_REQUEST_BYTES (a question is at most 2,000
  characters), counted before the app reads a byte: 413. A body comes with
  exactly one ``Content-Type``, ``application/json`` in UTF-8 (415 otherwise,
  400 for two); it is parsed once here (422 when it is not JSON, or repeats
  a key), and the app is handed that parse re-serialised, so what was checked
  is what the app reads: an escape (``"gradio.File\\u0044ata"``) or a second
  copy of a key cannot show the app something else.
- **Files.** A body that holds a Gradio file reference (an object with
  ``meta._type == "gradio.FileData"``, anywhere) is refused (400): questions
  and history are text, and a client-supplied chat history once made the
  server copy a file from disk into Gradio's cache.
- **Gradio calls.** A call names an event the app has and sends exactly
  its number of values (422 otherwise): ``/answer`` with too few arguments
  once answered ``{"error": null}`` and left a traceback in the log.

Every refusal is JSON ``{"detail": "one sentence"}`` and one log line
(``ui.limits``, WARNING), never a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_REQUEST_BYTES = 1 << 20  # 1 MiB: a question, its history and Gradio's envelope fit many times over
MAX_JSON_DEPTH = 64  # a chat's JSON is a few levels deep; deeper is an attack on the parser

# The routes served (full match). The page: its HTML, config, assets, theme and Gradio's queue.
# gradio_client: info, the queue, /call. The JSON API: /v1, its schema and docs (assets served locally).
GET_PATHS = re.compile(
    r"/|/config/?|/theme\.css|/favicon\.ico|/manifest\.json|/robots\.txt"
    r"|/(assets|static|svelte)/[^?#]+"
    r"|/gradio_api/(info/?|heartbeat/[\w-]+|queue/data|call/[\w-]+/[\w-]+|theme\.css|startup-events|app_id/?)"
    r"|/openapi\.json|/docs|/docs/oauth2-redirect|/docs-assets/[\w.-]+"
    r"|/v1/index"
)
POST_PATHS = re.compile(
    r"/gradio_api/(queue/join|call/[\w-]+|run/[\w-]+|api/[\w-]+|cancel|reset)/?"
    r"|/v1/(answer|feedback)"
)
_GRADIO_CALL = re.compile(r"/gradio_api/(?:call|run|api)/([\w-]+)/?")


@dataclass(frozen=True)
class GradioCalls:
    """The Gradio app's events: how many values each takes, by ``fn_index`` and by public API name."""

    by_index: Mapping[int, int] = field(default_factory=dict)
    by_name: Mapping[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # name -> (count, names)

    @classmethod
    def of(cls, blocks: Any) -> GradioCalls:
        """Read from a ``gr.Blocks`` (its ``fns``); the parameter names come from the functions' signatures."""
        import inspect

        by_index: dict[int, int] = {}
        by_name: dict[str, tuple[int, tuple[str, ...]]] = {}
        for index, fn in blocks.fns.items():
            by_index[int(index)] = len(fn.inputs)
            if fn.api_name and getattr(fn, "api_visibility", "public") != "private":
                try:
                    names = tuple(inspect.signature(fn.fn).parameters) if fn.fn is not None else ()
                except (TypeError, ValueError):
                    names = ()
                by_name[str(fn.api_name)] = (len(fn.inputs), names[: len(fn.inputs)])
        return cls(by_index, by_name)


class Refused(Exception):
    """A request the server will not pass on: ``status`` and a one-sentence ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class RequestLimits:
    """ASGI middleware enforcing the module's rules; ``gradio``: the mounted app's events, when there is one."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES, gradio: GradioCalls | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.gradio = gradio or GradioCalls()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        try:
            if method in ("GET", "HEAD", "OPTIONS"):
                if not GET_PATHS.fullmatch(path) and not POST_PATHS.fullmatch(path):
                    raise Refused(404, "Not found: this server serves the chat, its API and their assets only.")
                await self.app(scope, receive, send)
                return
            if method != "POST":
                raise Refused(405, f"Method {method} is not allowed here.")
            if not POST_PATHS.fullmatch(path):
                raise Refused(404, "Not found: this server serves the chat, its API and their assets only.")
            body = await self._read_body(scope, receive)
            if body:
                parsed = _parse_json(body, _one_header(scope, b"content-type"))
                self._check(path, parsed)
                body = json.dumps(parsed, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        except Refused as refused:
            log.warning("refused %s %s: %d %s", method, path, refused.status, refused.detail)
            await _refuse(send, refused.status, refused.detail)
            return
        except _ClientGone:
            return
        headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, up to the limit (413 past it, before reading on when the length is declared)."""
        declared = _one_header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise Refused(400, "The Content-Length header is not a number.")
            if int(declared) > self.max_bytes:
                raise Refused(413, f"The request body is over the {self.max_bytes:,}-byte limit.")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise Refused(413, f"The request body is over the {self.max_bytes:,}-byte limit.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _check(self, path: str, parsed: Any) -> None:
        if _names_a_file(parsed):
            raise Refused(400, "This app accepts only text; a request naming a file is refused.")
        by_index = isinstance(parsed, dict) and type(parsed.get("fn_index")) is int
        # The page calls events by number: through the queue, and (an example's loading) /run/predict.
        if path.startswith("/gradio_api/queue/join") or (by_index and _GRADIO_CALL.fullmatch(path)):
            if not by_index:
                raise Refused(422, "A queue request is a JSON object with a whole-number fn_index.")
            wanted = self.gradio.by_index.get(parsed["fn_index"])
            if wanted is None:
                raise Refused(422, f"The app has no event {parsed['fn_index']}.")
            _check_values(parsed.get("data"), wanted, f"event {parsed['fn_index']}")
            return
        call = _GRADIO_CALL.fullmatch(path)
        if call:
            name = call.group(1)
            if name not in self.gradio.by_name:
                raise Refused(404, f"The app has no endpoint /{name}.")
            count, names = self.gradio.by_name[name]
            data = parsed.get("data") if isinstance(parsed, dict) else None
            _check_values(data, count, f"the /{name} endpoint", names)


class _ClientGone(Exception):
    """The client closed the connection before sending its whole body."""


def _check_values(data: Any, count: int, what: str, names: tuple[str, ...] = ()) -> None:
    if not isinstance(data, list):
        raise Refused(422, f'A call to {what} sends its values as a JSON list under "data".')
    if len(data) != count:
        named = f" ({', '.join(names)})" if len(names) == count else ""
        raise Refused(422, f"{what[0].upper()}{what[1:]} takes {count} values{named}; got {len(data)}.")


def _one_header(scope: Scope, name: bytes) -> str | None:
    """The value of a header that may appear once; 400 when it appears more often."""
    values = [v for k, v in scope.get("headers") or [] if k.lower() == name]
    if len(values) > 1:
        raise Refused(400, f"The request has {len(values)} {name.decode().title()} headers; send one.")
    return values[0].decode("latin-1").strip() if values else None


def _parse_json(body: bytes, content_type: str | None) -> Any:
    """The body as JSON: one ``application/json`` (UTF-8) content type, valid UTF-8, no repeated keys."""
    media, _, params = (content_type or "").partition(";")
    if media.strip().lower() != "application/json":
        raise Refused(415, "Send the body as JSON, with the header Content-Type: application/json.")
    charset = next((p.split("=", 1)[1].strip().strip('"').lower() for p in params.split(";") if "=" in p
                    and p.split("=", 1)[0].strip().lower() == "charset"), "utf-8")  # fmt: skip
    if charset not in ("utf-8", "utf8"):
        raise Refused(415, f"Send JSON in UTF-8, not {charset}.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(422, f"The request body is not valid UTF-8 (byte {exc.start + 1}).") from None
    try:
        parsed = json.loads(text, object_pairs_hook=_no_repeated_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise Refused(
            422, f"The request body is not valid JSON: {exc.msg.lower()} at line {exc.lineno}, column {exc.colno}."
        ) from None
    except RecursionError:
        raise Refused(422, "The request body's JSON is nested too deeply.") from None
    if _depth(parsed) > MAX_JSON_DEPTH:
        raise Refused(422, f"The request body's JSON is nested more than {MAX_JSON_DEPTH} levels deep.")
    return parsed


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise Refused(422, f"The request body's JSON repeats the key {key!r}.")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise Refused(422, f"The request body's JSON holds {name}, which JSON does not allow.")


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x if isinstance(x, list) else ())]
        if depth > MAX_JSON_DEPTH:
            break
    return depth - 1


def _names_a_file(value: Any) -> bool:
    """Whether parsed JSON holds a Gradio file reference (``{"meta": {"_type": "gradio.FileData"}}``)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            meta = item.get("meta")
            if isinstance(meta, dict) and meta.get("_type") == "gradio.FileData":
                return True
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
