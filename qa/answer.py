"""``answer()``: retrieval, abstention and follow-up questions -> Answer.

An :class:`Engine` owns one index folder: it builds the index if missing or
stale, loads it once, and swaps in a rebuilt version in the background while
questions keep being answered from the old one.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.confidence import ConfidenceScale
from qa.live import LiveIndex
from qa.rank import SHIPPED, Ranker, Verifier, candidate_features, load_ranker, load_verifier
from qa.reader import OnnxReader
from qa.retrieve import Candidates, Retriever, answer_type
from qa.types import Answer, Phrase, QuestionError, Source

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000
MAX_K = 20
SPARE_SOURCES = 4  # first-stage candidates read per source asked for: repeated sentences are skipped
# The reader's probability for its best phrase under which an answer gives the sentence alone.
# SQuAD tune, end to end (docs/benchmarks.md): 0 gives a phrase always (F1 0.602), 0.15 for 82% of
# answers (F1 0.575), 0.3 for 59% (F1 0.508); the sentence is shown under the phrase either way.
PHRASE_MIN = 0.15
HISTORY_TURNS = 3  # earlier questions that can shape a follow-up (its own and two before)

# Words that make a question lean on an earlier turn ("Where is *it* built?").
_ANAPHORA = frozenset({
    "it", "its", "it's", "itself", "they", "them", "their", "theirs", "this", "that", "these", "those",
    "there", "he", "him", "his", "she", "her", "same", "one", "ones", "former", "latter",
})  # fmt: skip
_WORDS = re.compile(r"[\w’']+")


@dataclass(frozen=True)
class AnswerSettings:
    """Abstention and follow-up settings; docs/design.md "Retrieval settings" says how each was chosen."""

    abstain_below: float = 0.40  # confidence under which the sources "don't answer" (bench/tune.py)
    history_weight: float = 0.5  # weight of the previous question's vector in a follow-up
    neighbour_boost: float = 0.08  # boost of the previous answer's sentence and neighbours


def default_paths(index: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """(index, corpus) folders: arguments, else $QA_INDEX / $QA_CORPUS, else ./index, ./corpus."""
    index_path = Path(index if index is not None else os.environ.get("QA_INDEX", "index"))
    corpus = Path(os.environ.get("QA_CORPUS", "corpus"))
    return index_path, corpus


def check_question(question: object, k: object = 3) -> str:
    """Validate ``answer()``'s arguments; returns the stripped question."""
    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, not {type(question).__name__}")
    _check_text(question, "the question")
    stripped = question.strip()
    if not stripped:
        raise QuestionError("the question is empty; type a question about the sources")
    if len(stripped) > MAX_QUESTION_CHARS:
        raise QuestionError(f"the question is {len(stripped):,} characters long; the limit is {MAX_QUESTION_CHARS:,}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise QuestionError(f"the number of sources (k) must be a whole number from 1 to {MAX_K}; got {k!r}")
    return stripped


def _check_text(text: str, what: str) -> None:
    """QuestionError when ``text`` holds a lone surrogate (an undecodable byte from a shell, broken JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QuestionError(
            f"{what} is not valid text (character {exc.start + 1} is an undecodable byte or a lone surrogate); "
            "retype it as plain text"
        ) from None


def check_history(history: object) -> list[str]:
    """Validate the chat's earlier questions; returns the last few that matter, stripped.

    Only the last three turns can shape an answer, so older ones are dropped.
    """
    if isinstance(history, str | bytes) or not isinstance(history, Sequence):
        raise QuestionError("history must be a list of earlier questions, oldest first")
    turns = []
    for turn in history:
        if not isinstance(turn, str):
            raise QuestionError(f"each earlier question must be text, not {type(turn).__name__}")
        _check_text(turn, "an earlier question")
        if len(turn.strip()) > MAX_QUESTION_CHARS:
            raise QuestionError(f"an earlier question is over the {MAX_QUESTION_CHARS:,}-character limit")
        if turn.strip():
            turns.append(turn.strip())
    return turns[-HISTORY_TURNS:]


class Engine:
    """Answers questions from one index folder; thread-safe, loads once.

    Keeping the index live (building, loading, swapping) is ``self.live``'s
    job (:class:`qa.live.LiveIndex`); the engine ranks, reads and composes.
    """

    def __init__(
        self,
        index: str | os.PathLike[str],
        corpus: str | os.PathLike[str] | None = None,
        settings: AnswerSettings | None = None,
    ) -> None:
        self.settings = settings or AnswerSettings()
        # The learned ranker and optional verifier (qa/rank.py); None ranks by the hand-set fusion.
        self.ranker: Ranker | None = _shipped_ranker()
        self._verifier: Verifier | None = None
        self._verifier_loaded = False  # the verifier loads with the index, not when the engine is made
        self.live = LiveIndex(index, corpus, warm=lambda: self.verifier)
        self.index = self.live.index

    @property
    def verifier(self) -> Verifier | None:
        """The verifier the ranker was trained with (loaded on first use), or the one assigned."""
        if not self._verifier_loaded:
            self._verifier = _shipped_verifier(self.ranker)
            self._verifier_loaded = True
        return self._verifier

    @verifier.setter
    def verifier(self, verifier: Verifier | None) -> None:
        self._verifier, self._verifier_loaded = verifier, True

    def retriever(self) -> Retriever:
        """The live version's retriever (see :meth:`qa.live.LiveIndex.retriever`)."""
        return self.live.retriever()

    def refresh(self, *, wait: bool = False) -> None:
        """Swap to a newer index version if one was built (see :meth:`qa.live.LiveIndex.refresh`)."""
        self.live.refresh(wait=wait)

    def status(self, *, max_age: float = 0.0) -> dict[str, Any]:
        """The live version and its state against the corpus (see :meth:`qa.live.LiveIndex.status`)."""
        return self.live.status(max_age=max_age)

    # --- answering ------------------------------------------------------------

    def answer(self, question: str, *, history: Sequence[str] = (), k: int = 3) -> Answer:
        question = check_question(question, k)
        history = check_history(history)
        retriever = self.retriever()
        return self._answer(retriever, question, history, k, remember=True)

    def candidates(
        self,
        retriever: Retriever,
        question: str,
        history: list[str],
        *,
        exclude: frozenset[int] | None = None,
        reuse: bool = False,
        vector: np.ndarray | None = None,
    ) -> tuple[Candidates, np.ndarray, bool, float]:
        """First-stage candidates of a question read with its history.

        Returns (candidates, first-stage scores, whether it was read as a
        follow-up, the previous answer's confidence for a follow-up that lands
        on it). ``exclude`` (sentence ids) and ``vector`` (the question's
        embedding, batch-encoded beforehand) are for evaluation and training only.
        """
        cfg = self.settings
        query = vector if vector is not None else retriever.embed(question, reuse=reuse)
        tokens = retriever.tokens(question)
        boost: dict[int, float] = {}
        inherited = 0.0
        follow_up = bool(history) and is_follow_up(question)
        if follow_up:
            # Resolve what the previous turn was about: its own answer (from the
            # turns before it, at most two back) and its words.
            previous = self._answer(retriever, history[-1], history[-3:-1], 1, remember=False, exclude=exclude)
            prev_vec = retriever.embed(history[-1], reuse=True)
            query = query + cfg.history_weight * prev_vec
            query = (query / np.linalg.norm(query)).astype(np.float32)
            tokens = tokens + retriever.tokens(history[-1])
            if previous.sources and not previous.abstained:
                boost = dict.fromkeys(retriever.neighbours(previous.sources[0]), cfg.neighbour_boost)
                inherited = previous.confidence
        c = retriever.candidates(query, tokens, 1, boost=boost, answer_type=answer_type(question), exclude=exclude)
        return c, retriever.fuse(c), follow_up, inherited

    def _answer(
        self,
        retriever: Retriever,
        question: str,
        history: list[str],
        k: int,
        *,
        remember: bool,
        exclude: frozenset[int] | None = None,
    ) -> Answer:
        if retriever.data.vectors.ntotal == 0:
            return self._compose(retriever, question, [], [], k, 0.0)
        c, fused, follow_up, inherited = self.candidates(
            retriever, question, history, exclude=exclude, reuse=not remember
        )
        ranker = self.ranker
        if ranker is None:
            order = np.argsort(-fused, kind="stable")[: max(k, 1) * SPARE_SOURCES]
            ids, scores = c.ids[order], fused[order]
            confidence = max(float(c.dense[order[0]]), float(c.context[order[0]])) if len(order) else 0.0
        else:
            cand, x = candidate_features(
                c, fused, retriever.data.sentences, has_type=answer_type(question) is not None,
                follow_up=follow_up, depth=max(ranker.depth, k), question=question,
                verifier=self.verifier if ranker.uses_verifier else None,
                words=retriever.words, question_words=frozenset(retriever.tokens(question)),
                verify_rows=ranker.verify_rows, preceding=retriever.context,
            )  # fmt: skip
            ranked = ranker.rank(cand, x)
            ids, scores, confidence = ranked.ids, ranked.scores, ranked.confidence
        boosted = {int(i) for i, b in zip(c.ids, c.boost, strict=True) if b > 0}
        if len(ids) and int(ids[0]) in boosted:
            # The follow-up landed where the previous answer was: the history that
            # resolved it vouches for it, so it is at least as sure as that answer.
            confidence = max(confidence, inherited)
        # A follow-up is read as asked: its history already steered the candidates (the previous
        # answer's neighbours, the earlier question's words); read with it, the reader answers the earlier
        # question (SQuAD's rule-made chats: 43/60 right as asked, 30/60 with "PREVIOUS [SEP] FOLLOW-UP").
        phrase = self._phrase(retriever, question, ids)
        return self._compose(retriever, question, list(ids), list(scores), k, confidence, phrase)

    def _phrase(self, retriever: Retriever, question: str, ids: Sequence[int] | np.ndarray) -> Phrase | None:
        """The answer phrase the reader finds in the top sentence (None without a reader or a sure phrase)."""
        reader = self.verifier
        if not len(ids) or not isinstance(reader, OnnxReader):
            return None
        i = int(ids[0])
        s = retriever.data.sentences[i]
        reading = reader.read(question, [s.text], [retriever.context(i)])[0]
        if reading.phrase is None or reading.phrase_score < PHRASE_MIN:
            return None
        a, b = reading.phrase
        if b - a >= len(s.text.rstrip(".!? ")):  # the whole sentence is no phrase
            return None
        return Phrase(s.text[a:b], s.doc, s.start + a, s.start + b, reading.phrase_score)

    def threshold(self) -> float:
        """Confidence under which an answer abstains: the ranker's, else the hand-set one."""
        return self.ranker.threshold if self.ranker is not None else self.settings.abstain_below

    def confidence_scale(self) -> ConfidenceScale:
        """How a confidence reads in words: bands of the ranker's calibrated probability (qa.confidence)."""
        if self.ranker is None:
            return ConfidenceScale.uncalibrated(self.settings.abstain_below)
        return ConfidenceScale.for_ranker(self.ranker.threshold, self.ranker.meta)

    def _compose(
        self,
        retriever: Retriever,
        question: str,
        ids: list[int],
        scores: list[float],
        k: int,
        confidence: float,
        phrase: Phrase | None = None,
    ) -> Answer:
        data = retriever.data
        sources: list[Source] = []
        seen: set[str] = set()
        for i, score in zip(ids, scores, strict=True):
            if len(sources) == k:
                break
            s = data.sentences[int(i)]
            # A sentence repeated word for word (a handbook that holds its text twice, a
            # boilerplate line in every report) is one answer: listed once, where it ranks best.
            said = _collapse(s.text).casefold()
            if said in seen:
                continue
            seen.add(said)
            sources.append(
                Source(
                    s.doc,
                    s.start,
                    s.end,
                    s.text,
                    round(float(score), 4),
                    s.passage_start,
                    s.passage_end,
                    s.page,
                    s.pages,
                    s.heading,
                    s.boxes,
                )
            )
        abstained = confidence < self.threshold()
        if not sources:
            text = "The sources don't answer this question: the index holds no sentences."
        elif abstained:
            text = (
                "The sources don't answer this question. "
                f"The closest match (low confidence) is from {sources[0].doc}: “{_collapse(sources[0].text)}”"
            )
        elif phrase is not None:
            text = f"{_collapse(phrase.text)} — “{_collapse(sources[0].text)}” [1]"
        else:
            text = f"{_collapse(sources[0].text)} [1]"
        if abstained or not sources:
            phrase = None
        label = self.confidence_scale().label(confidence, abstained or not sources)
        return Answer(question, text, abstained, sources, round(confidence, 4), data.manifest.version, phrase, label)


def _shipped_verifier(ranker: Ranker | None) -> Verifier | None:
    """The verifier a ranker was trained with (``meta["verifier"]``, a file beside it in qa/models/)."""
    if ranker is None or not ranker.uses_verifier or not ranker.meta.get("verifier"):
        return None
    return load_verifier(SHIPPED.parent / str(ranker.meta["verifier"]))


def _shipped_ranker() -> Ranker | None:
    """The shipped ranker, or None (hand-set fusion) when ``$QA_RANKER`` is "none" or no file ships."""
    choice = os.environ.get("QA_RANKER", "")
    if choice.lower() == "none":
        return None
    path = Path(choice) if choice else SHIPPED
    if not choice and not path.exists():
        return None
    return load_ranker(path)


def is_follow_up(question: str) -> bool:
    """A question that refers back (pronouns, "the same") or is too short to stand alone."""
    words = [w.lower() for w in _WORDS.findall(question)]
    return any(w in _ANAPHORA for w in words) or len(words) <= 3


def _collapse(text: str) -> str:
    return " ".join(text.split())


_engines: dict[Path, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(index: str | os.PathLike[str] | None = None) -> Engine:
    """The process-wide engine for an index folder (created once, then reused)."""
    index_path, corpus = default_paths(index)
    key = index_path.resolve()
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            # The default index is built from the default corpus; a named one from its own.
            engine = _engines[key] = Engine(index_path, corpus if index is None else None)
        return engine


def answer(
    question: str,
    *,
    history: Sequence[str] = (),
    k: int = 3,
    index: str | os.PathLike[str] | None = None,
) -> Answer:
    """Answer a question from the indexed sources.

    ``history`` holds the chat's earlier questions, oldest first; ``k`` (1 to
    20) is how many sources to return. ``index`` is an index folder (default
    ``$QA_INDEX`` or ``./index``, built from ``$QA_CORPUS`` or ``./corpus``
    when missing or stale).

    >>> a = answer("How many vehicles did Mitsubishi sell in Southeast Asia?")
    >>> a.sources[0].text[:36]
    'Mitsubishi Motors sold about 280,000'
    """
    return get_engine(index).answer(question, history=history, k=k)  # validates before any I/O
