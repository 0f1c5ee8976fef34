"""The HTTP API: ``create_api(service) -> FastAPI``, the JSON routes the web chat is mounted beside.

- ``POST /v1/answer`` ``{"question": str, "history": [str], "k": int}`` -> ``Answer.to_dict()``
  (the phrase, the confidence and its words included);
- ``GET /v1/index`` -> the live index's status;
- ``POST /v1/feedback`` ``{"answer": <what /v1/answer returned>, "rating": 1 | -1, "history": [str],
  "comment": str}`` -> ``{"id": int}``.

The schema is at ``/openapi.json`` and its docs at ``/docs`` (Swagger UI, served
from this server: the page needs nothing from the internet). Errors are JSON
with a one-sentence ``detail``: 422 for a bad question or body, 503 while the
index loads (with ``Retry-After``) or when every answering slot stays busy,
413 for a body over the limit (``ui.limits``). No Gradio here: a deployment
can serve this app alone (``create_api(service)``) or with the chat mounted
on it (``ui.app.server_app``).

>>> app = create_api(ChatService(start_engine("index")))   # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=7860)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from qa import MAX_K, MAX_QUESTION_CHARS, Answer, QAError, QuestionError
from qa.feedback import MAX_COMMENT_CHARS, FeedbackError
from ui.service import BusyError, ChatService

log = logging.getLogger(__name__)

BUSY_WAIT_SECONDS = 60.0  # how long a question waits for a free answering slot before a 503
RETRY_AFTER_SECONDS = 5  # what a 503 while the index loads tells a client to wait


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class AnswerRequest(_Strict):
    """A question, the chat's earlier questions and how many sources to return."""

    question: str = Field(description=f"The question: 1 to {MAX_QUESTION_CHARS:,} characters after stripping.")
    history: list[str] = Field(
        default_factory=list, description="The chat's earlier questions, oldest first (used by follow-ups)."
    )
    k: int = Field(default=3, description=f"How many sources to return, 1 to {MAX_K}.")


class SourceOut(BaseModel):
    """A sentence the answer rests on (the first) or related to it (the others)."""

    doc: str = Field(description="The document: its path in the corpus folder.")
    start: int = Field(description="Offset of the sentence in the document's text, in characters.")
    end: int
    text: str = Field(description="The sentence; document_text[start:end] == text.")
    score: float = Field(description="The ranker's score (higher is better; not a probability).")
    passage_start: int
    passage_end: int
    page: int | None = Field(description="First PDF page (from 1); null for other formats.")
    pages: list[int]
    heading: str | None = Field(description="Heading path in Markdown, HTML and Word files.")
    boxes: list[list[float]] = Field(description="[page, left, bottom, right, top] in PDF points.")


class PhraseOut(BaseModel):
    """The answer itself, inside the first source's sentence."""

    text: str
    doc: str
    start: int
    end: int
    score: float = Field(description="The reader's probability for this phrase.")


class AnswerOut(BaseModel):
    """``Answer.to_dict()``."""

    question: str
    text: str = Field(description="What a person reads: the phrase and the sentence, or that the sources don't say.")
    abstained: bool = Field(description="True when the sources don't answer; sources are then only related.")
    confidence: float = Field(description="Calibrated probability that the first source answers the question.")
    confidence_label: str = Field(
        description="The confidence in words: confident, likely, unsure, or the sources don't say."
    )
    phrase: PhraseOut | None
    index_version: str = Field(description="The index version that answered.")
    sources: list[SourceOut]


class IndexOut(BaseModel):
    """The live index version and whether it matches the corpus."""

    model_config = ConfigDict(extra="allow")

    version: str
    built_at: str
    documents: int
    sentences: int
    state: str = Field(description="fresh, stale, missing or corrupted.")
    reason: str | None = None
    swapping: bool = Field(description="True while a newer version loads.")


class FeedbackRequest(_Strict):
    """A rating of an answer this API gave."""

    answer: dict[str, Any] = Field(description="The answer as /v1/answer returned it.")
    rating: Literal[1, -1] = Field(description="1: the answer is right and useful; -1: it is wrong.")
    history: list[str] = Field(default_factory=list, description="The chat's earlier questions, oldest first.")
    comment: str | None = Field(
        default=None, description=f"What was wrong or right, up to {MAX_COMMENT_CHARS:,} characters."
    )


class FeedbackOut(BaseModel):
    id: int = Field(description="The stored rating's number.")


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, in one sentence.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": "The request body is over the size limit."},
    422: {"model": ErrorOut, "description": "A bad question or request body."},
    503: {"model": ErrorOut, "description": "The index is loading, or every answering slot stayed busy."},
}


def create_api(service: ChatService | Callable[[], ChatService | None], *, title: str = "qa") -> FastAPI:
    """The JSON API over ``service`` (or a callable giving the service, None while the index loads)."""
    from fastapi_offline import FastAPIOffline

    current: Callable[[], ChatService | None] = service if callable(service) else (lambda: service)
    app = FastAPIOffline(
        title=title,
        summary="Answers from your documents, each citing the exact sentence it comes from.",
        version="1",
        redoc_url=None,
        static_url="/docs-assets",
    )

    def ready() -> ChatService:
        found = current()
        if found is None:
            raise _Unavailable("The index and model are still loading; try again in a few seconds.")
        return found

    @app.post("/v1/answer", response_model=AnswerOut, responses=_ERRORS, summary="Answer a question")
    def answer(request: AnswerRequest) -> Any:
        """Answer a question from the indexed sources, citing the sentence it rests on."""
        try:
            result = ready().ask(request.question, request.history, request.k, wait=BUSY_WAIT_SECONDS)
        except QuestionError as exc:
            raise _BadRequest(sentence(exc)) from exc
        except BusyError as exc:
            raise _Unavailable(sentence(exc)) from exc
        except QAError as exc:
            log.error("could not answer: %s", exc)
            raise _Unavailable("The index is not available: " + sentence(exc)) from exc
        return _json(result)

    @app.get("/v1/index", response_model=IndexOut, responses={503: _ERRORS[503]}, summary="The index's status")
    def index() -> Any:
        """The live index version: documents, sentences, build time, and whether it still matches the corpus."""
        try:
            return ready().status()
        except QAError as exc:
            raise _Unavailable("The index is not available: " + sentence(exc)) from exc

    @app.post("/v1/feedback", response_model=FeedbackOut, status_code=201, responses=_ERRORS, summary="Rate an answer")
    def feedback(request: FeedbackRequest) -> Any:
        """Store a thumbs up (1) or down (-1) for an answer; `qa feedback export` turns ratings into test cases."""
        try:
            rated = Answer.from_dict(request.answer)
        except ValueError as exc:
            raise _BadRequest("The answer is not one /v1/answer gave: " + sentence(exc)) from exc
        try:
            return {"id": ready().rate(rated, request.rating, request.history, request.comment)}
        except FeedbackError as exc:
            raise _BadRequest(sentence(exc)) from exc

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = validation_sentence(exc.errors())
        log.info("refused %s %s: 422 %s", request.method, request.url.path, detail)
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(_BadRequest)
    async def bad(request: Request, exc: _BadRequest) -> JSONResponse:
        log.info("refused %s %s: 422 %s", request.method, request.url.path, exc.detail)
        return JSONResponse({"detail": exc.detail}, status_code=422)

    @app.exception_handler(_Unavailable)
    async def unavailable(request: Request, exc: _Unavailable) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return JSONResponse({"detail": exc.detail}, status_code=503, headers=headers)

    return app


class _BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Unavailable(_BadRequest):
    pass


def _json(answer: Answer) -> Any:
    """The answer as JSON, serialised once (the response model documents it; checking it again costs time)."""
    return JSONResponse(answer.to_dict())


def sentence(exc: Exception) -> str:
    """An error's message as one sentence: a capital first letter and a full stop."""
    message = str(exc).strip() or "something went wrong"
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


def validation_sentence(errors: Any) -> str:
    """FastAPI's validation errors as one sentence about the first of them."""
    if not errors:
        return "The request body is not valid."
    first = errors[0]
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return "The request body is not valid JSON."
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    if kind == "missing":
        return f"The request body lacks the field {where!r}." if where else "The request needs a JSON body."
    if kind == "extra_forbidden":
        return f"The request body has a field this endpoint does not take: {where!r}."
    message = str(first.get("msg", "is not valid")).rstrip(".")
    if where:
        return f"The field {where!r} is not valid: {message[0].lower() + message[1:]}."
    return f"The request body is not valid: {message[0].lower() + message[1:]}."
