"""What the web chat and the HTTP API do, without Gradio or FastAPI: answer, rate, report status.

One :class:`ChatService` per server. Its answers share one concurrency limit
(``$QA_CONCURRENCY``, default 8), whether the question comes from the page,
``gradio_client`` or ``POST /v1/answer``.

>>> service = ChatService(start_engine("index"), feedback=FeedbackStore("data"))   # doctest: +SKIP
>>> service.ask("Who is Carlos Ghosn?").confidence_label                           # doctest: +SKIP
'confident'
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa import Answer, QAError, QuestionError, Source
from qa.corpus import source_path
from qa.feedback import FeedbackStore
from qa.layout import Box
from ui import render

if TYPE_CHECKING:
    from qa import Engine
    from qa.confidence import ConfidenceScale

log = logging.getLogger(__name__)

EXAMPLES = 3  # example questions the page offers, one per document at most
_TOPIC_WORDS = re.compile(r"[A-Z][\w’'&.-]*(?:\s+(?:of|de|and|&|[A-Z][\w’'&.-]*))*")
_DROP_LEADING = frozenset({"The", "A", "An", "In", "On", "At", "For", "By", "This", "That", "It", "As", "But", "And"})


@functools.lru_cache(maxsize=32)  # about 10 MB of pictures at most
def _page_uri(stamp: tuple[str, int, int, int, int], sha256: str, page: int, boxes: tuple[Box, ...]) -> str | None:
    """``ChatService.page_image``'s picture for a file of this stat; None when its bytes are not the indexed ones."""
    try:
        raw = Path(stamp[0]).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(raw).hexdigest() != sha256:
        return None  # the file changed since the index was built: its boxes would be wrong
    try:
        return render.data_uri(render.page_png(raw, page, boxes))
    except Exception:  # a page that no longer renders: show the passage without its picture
        log.warning("cannot render page %s of %s", page, stamp[0], exc_info=True)
        return None


class BusyError(QAError):
    """Every answering slot stayed taken for the whole wait."""


class AnswerServiceError(QAError):
    """The answer service this chat forwards to (``answers_from``) cannot be reached or failed."""


def ask_remote(url: str, question: str, history: Sequence[str] = (), k: int = 3, timeout: float = 120.0) -> Answer:
    """``POST URL/v1/answer``: the answer of another server of this API (a ``qa serve`` or Ray Serve replicas).

    A 422 is a QuestionError with the server's sentence; anything else that is
    not an answer is an AnswerServiceError naming the service.
    """
    import httpx

    try:
        reply = httpx.post(f"{url}/v1/answer", json={"question": question, "history": list(history), "k": k},
                           timeout=timeout)  # fmt: skip
    except httpx.HTTPError as exc:
        raise AnswerServiceError(f"the answer service at {url} cannot be reached ({type(exc).__name__})") from exc
    try:
        body = reply.json()
    except ValueError:
        body = {}
    if reply.status_code == 200 and isinstance(body, dict) and "sources" in body:
        return Answer.from_dict(body)
    detail = body.get("detail") if isinstance(body, dict) else None
    if reply.status_code == 422 and isinstance(detail, str):
        raise QuestionError(detail)
    raise AnswerServiceError(f"the answer service at {url} answered HTTP {reply.status_code}: {detail or 'no answer'}")


def concurrency() -> int:
    """Questions answered at once by the server: ``$QA_CONCURRENCY``, default 8."""
    raw = os.environ.get("QA_CONCURRENCY", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 8


class ChatService:
    """Answers, passages, page images, ratings and status for one engine; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        *,
        feedback: FeedbackStore | None = None,
        limit: int | None = None,
        answers_from: str | None = None,
    ) -> None:
        self.engine = engine
        self.feedback = feedback
        # Another server of the JSON API that answers (Ray Serve replicas); the engine then shows passages only.
        self.answers_from = answers_from.rstrip("/") if answers_from else None
        # One limit for every way in: the page's queue, gradio_client and the JSON API.
        self._slots = threading.BoundedSemaphore(limit or concurrency())

    def ask(self, question: str, history: Sequence[str] = (), k: int = 3, *, wait: float | None = None) -> Answer:
        """The engine's answer, once one of the shared slots is free (BusyError after ``wait`` seconds)."""
        if not self._slots.acquire(timeout=wait):
            raise BusyError(f"all {concurrency()} answering slots stayed busy for {wait:g} s; try again shortly")
        try:
            if self.answers_from is not None:
                return ask_remote(self.answers_from, question, history, k)
            return self.engine.answer(question, history=history, k=k)
        finally:
            self._slots.release()

    def confidence_scale(self) -> ConfidenceScale:
        return self.engine.confidence_scale()

    def rate(self, answer: Answer, rating: int, history: Sequence[str] = (), comment: str | None = None) -> int:
        """Store a rating of ``answer`` (1 or -1); returns its id. FeedbackError when there is nowhere to keep it."""
        return self._ratings().record(answer, rating=rating, history=history, comment=comment)

    def comment(self, rating_id: int, comment: str) -> None:
        self._ratings().add_comment(rating_id, comment)

    def _ratings(self) -> FeedbackStore:
        from qa.feedback import FeedbackError

        if self.feedback is None:
            raise FeedbackError("this server keeps no ratings (it was started without a data folder)")
        return self.feedback

    def page_image(self, source: Source) -> str | None:
        """The source's PDF page with its sentence boxed, as a data: URI; None when the file changed or is gone."""
        data = self.engine.retriever().data
        document = data.documents.get(source.doc)
        if document is None or source.page is None:
            return None
        path = source_path(data.manifest.corpus, source.doc)  # a name that is not UTF-8 is escaped in its id
        try:
            st = path.stat()
        except OSError:
            return None
        # An unchanged stat means unchanged bytes, as in a build: the file is read, hashed and drawn once.
        stamp = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        return _page_uri(stamp, document.sha256, source.page, source.boxes)

    def passage_text(self, source: Source) -> str:
        document = self.engine.retriever().data.documents.get(source.doc)
        return document.text[source.passage_start : source.passage_end] if document else source.text

    def status(self, *, after_answer: bool = False) -> dict[str, Any]:
        """The live index: counts, build time, version, and whether it still matches the corpus.

        After an answer the corpus is not walked again (it cost 150 ms on 5,000
        files): the comparison made for this index version is reused; a rebuild
        (by the watcher or anyone) makes a new version and a new comparison.
        Opening the page compares afresh (at most every 2 s).
        """
        s = self.engine.status(max_age=math.inf if after_answer else 2.0)
        if s["swapping"]:
            s["state"], s["reason"] = "stale", "a newer index version is loading"
        return s

    def status_markdown(self, *, after_answer: bool = False) -> str:
        s = self.status(after_answer=after_answer)
        try:
            built = datetime.fromisoformat(s["built_at"]).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            built = s["built_at"]
        docs = "document" if s["documents"] == 1 else "documents"
        state = "fresh" if s["state"] == "fresh" else f"{s['state']} ({s['reason']})" if s["reason"] else s["state"]
        text = (
            f"Index: {s['documents']} {docs}, {s['sentences']} sentences, built {built}, "
            f"version {s['version']}, {state}"
        )
        return render.escape_markdown(text)

    def examples(self, n: int = EXAMPLES) -> list[str]:
        """Questions made from the corpus: "What does DOC say about TOPIC?", one per document, at most ``n``.

        TOPIC is the name a document's first citable sentence leads with (its
        first run of capitalised words, "Mitsubishi Motors"); documents whose
        first sentence names nothing give no question. Few and plain, so every
        one is a question the index can answer from that document.
        """
        data = self.engine.retriever().data
        questions: list[str] = []
        seen: set[str] = set()
        for sentence in data.sentences:
            if len(questions) == n:
                break
            if not sentence.citable or sentence.doc in seen:
                continue
            seen.add(sentence.doc)
            topic = _leading_name(sentence.text)
            if topic:
                questions.append(f"What does {_document_name(sentence.doc)} say about {topic}?")
        return questions


def _leading_name(sentence: str) -> str | None:
    """The first run of capitalised words in a sentence, without a leading article ("The")."""
    for match in _TOPIC_WORDS.finditer(sentence):
        words = match.group().split()
        while words and words[0] in _DROP_LEADING:
            words.pop(0)
        while words and words[-1].lower() in {"of", "de", "and", "&"}:
            words.pop()
        name = " ".join(words).rstrip(".")
        if len(name) >= 3 and any(c.islower() for c in name):
            return name
    return None


def _document_name(doc: str) -> str:
    """A document as a reader names it: its file name without folders or suffix, dashes as spaces."""
    stem = Path(doc).stem.replace("_", " ").replace("-", " ").strip()
    return f"“{stem}”" if stem else doc


def start_engine(
    index: str | os.PathLike[str] | None = None,
    corpus: str | os.PathLike[str] | None = None,
    *,
    watch: bool = False,
) -> Engine:
    """Build the index if missing or stale, load model and index, and answer one warm-up question.

    With ``watch`` the corpus is watched: each change rebuilds the index and
    the engine swaps to it in the background.
    """
    from qa import build_index, get_engine

    index_path = Path(index if index is not None else os.environ.get("QA_INDEX", "index"))
    if corpus is not None and Path(corpus).is_dir():
        build_index(corpus, index_path)
    engine = get_engine(index_path)
    if watch:
        from qa.watch import CorpusWatcher

        if corpus is None or not Path(corpus).is_dir():
            raise QAError("--watch needs a corpus folder to watch; pass --corpus DIR")
        CorpusWatcher(corpus, index_path, engine=engine).start()
    engine.retriever()
    # The first real question then costs what later ones do (lazy torch/FAISS/BM25 paths are warm).
    engine.answer("How does this work?")
    return engine
