"""Question -> ranked sentences: dense (FAISS) and BM25 scores, fused.

The settings below were chosen by measurement (``qa eval``); docs/design.md's
"Retrieval settings" section gives the figures behind each.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from qa.embed import get_encoder
from qa.store import IndexData
from qa.types import Source

WORDS_CACHE = 50_000  # sentences whose ranker words are kept: bounded, whatever the corpus size
_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"

# What a question asks for, and how a sentence that holds it looks.
ANSWER_TYPES: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    "percentage": (
        re.compile(r"\b(what|which) (percentage|percent|share|proportion|fraction)\b|\bhow much of\b", re.I),
        re.compile(r"\d\s?(%|percent\b|per cent\b)", re.I),
    ),
    "time": (
        re.compile(r"^\s*(when|since when|until when)\b|\b(what|which) (year|month|day|date|time)\b", re.I),
        re.compile(rf"\b(1[5-9]\d\d|20\d\d)s?\b|\b({_MONTHS})\b|\b(last|next|this) (year|month|week)\b", re.I),
    ),
    "quantity": (
        re.compile(r"\bhow (many|much)\b", re.I),
        re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|dozen|hundred|thousand|million)\b", re.I),
    ),
}


def answer_type(question: str) -> str | None:
    """The kind of answer a question asks for (percentage, time, quantity), if recognisable."""
    for name, (asks, _) in ANSWER_TYPES.items():
        if asks.search(question):
            return name
    return None


def _rrf(scores: np.ndarray, k: int = 60) -> np.ndarray:
    """Reciprocal-rank fusion term: 1 / (k + rank), rank 1 for the best score."""
    ranks = np.empty(len(scores), dtype=np.float32)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    return 1.0 / (k + ranks)


@dataclass(frozen=True)
class RetrievalSettings:
    candidates: int = 100  # dense candidates taken from FAISS (and as many from BM25)
    window_weight: float = 0.7  # weight of the context-window view in the dense score
    bm25_weight: float = 0.6  # weight of BM25 (scaled to 0..1) in the fused score
    bm25_scale: float = 10.0  # BM25 score at which the scaled value saturates at 1
    centrality_penalty: float = 0.4  # how much closeness to the corpus centroid costs
    answer_type_boost: float = 0.03  # bonus for holding what a how-many/when/percentage question asks for
    fusion: str = "score"  # "score": weighted scores; "rrf": reciprocal-rank fusion


@dataclass(frozen=True)
class Hit:
    """A scored sentence (its id is its row in ``IndexData.sentences``)."""

    sentence: int
    score: float  # fused: what ranks
    dense: float  # cosine of the question with the sentence alone
    context: float  # cosine of the question with the sentence in its window
    lexical: float  # BM25 score


@dataclass(frozen=True)
class Candidates:
    """First-stage candidates of one question: parallel arrays, one entry per sentence."""

    ids: np.ndarray  # sentence ids
    dense: np.ndarray  # cosine with the sentence alone
    context: np.ndarray  # cosine with the sentence in its window
    central_dense: np.ndarray  # closeness of the sentence vector to the corpus centroid
    central_context: np.ndarray  # same for the window vector
    bm25: np.ndarray  # raw BM25 score
    typed: np.ndarray  # 1 when the sentence holds what the question's answer type asks for
    boost: np.ndarray  # follow-up boost (previous answer and its neighbours)


class Retriever:
    """Searches one loaded index. Read-only, so safe to share between threads."""

    def __init__(self, data: IndexData, settings: RetrievalSettings | None = None) -> None:
        self.data = data
        self.settings = settings or RetrievalSettings()
        # The exact export that embedded the index (found by id, never re-derived from the installed model).
        self.encoder = get_encoder(data.manifest.model, data.manifest.encoder.get("export"))
        n = data.vectors.ntotal
        # The vectors themselves (memory-mapped or FAISS's own storage): exact scores of every candidate,
        # whether the approximate index or BM25 found it.
        self._matrix = data.matrix
        views = len(data.manifest.settings["embedding"]["views"])
        self._views = views
        # vectors are written sentence by sentence, ``views`` rows each
        self._first_row = np.full(len(data.sentences), -1, dtype=np.int64)
        self._first_row[data.vector_sentence[::views]] = np.arange(0, n, views)
        # Generic sentences (headlines, summaries) sit near the centroid of the
        # corpus and match every vague question; their closeness to it (computed
        # at build time) is subtracted from their score, like IDF for dense vectors.
        self._centrality = data.centrality
        self._sparse_pos = np.full(len(data.sentences), -1, dtype=np.int64)
        self._sparse_pos[data.sparse_rows] = np.arange(len(data.sparse_rows))
        # bounded, thread-safe, whatever the corpus size (as DocumentTable.text)
        self.words = functools.lru_cache(maxsize=WORDS_CACHE)(self._words_of)

    def embed(self, question: str, *, reuse: bool = False) -> np.ndarray:
        return self.encoder.encode_query(question, reuse=reuse)

    def candidates(
        self,
        query: np.ndarray,
        tokens: list[str],
        k: int,
        *,
        boost: dict[int, float] | None = None,
        answer_type: str | None = None,
        exclude: frozenset[int] | None = None,
    ) -> Candidates:
        """Every first-stage candidate of a query with its raw scores, unordered.

        ``exclude`` (sentence ids) is for evaluation and training only: it asks
        the question as if those sentences were not in the corpus.
        """
        data, cfg = self.data, self.settings
        n = data.vectors.ntotal
        depth = max(cfg.candidates, k)
        extra = len(exclude) if exclude else 0
        m = min(n, (depth + extra) * self._views)
        _, rows = data.vectors.search(query.reshape(1, -1), m)
        candidates = set(data.vector_sentence[rows[0][rows[0] >= 0]].tolist())
        # BM25 over the question's words' postings only: (rows, scores), rows ascending
        lexical = data.sparse.matches(tokens) if tokens else None
        if lexical is not None and len(lexical[0]):
            rows_l, scores_l = lexical
            want = depth + extra
            top = np.argpartition(-scores_l, want - 1)[:want] if want < len(scores_l) else np.arange(len(scores_l))
            candidates.update(data.sparse_rows[rows_l[top]].tolist())
        if boost:
            candidates.update(boost)
        if exclude:
            candidates.difference_update(exclude)
        ids = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        first = self._first_row[ids]
        view_rows = first[:, None] + np.arange(self._views)
        raw = (np.asarray(self._matrix[view_rows], dtype=np.float32) @ query).astype(np.float32)  # (cand., views)
        central = self._centrality[view_rows]
        bm25 = self._lexical_for(ids, lexical) if lexical is not None else np.zeros(len(ids), dtype=np.float32)
        typed = np.zeros(len(ids), dtype=np.float32)
        if answer_type:
            pattern = ANSWER_TYPES[answer_type][1]
            typed = np.array([bool(pattern.search(data.sentences[i].text)) for i in ids], dtype=np.float32)
        boosted = np.zeros(len(ids), dtype=np.float32)
        if boost:
            boosted = np.array([boost.get(int(i), 0.0) for i in ids], dtype=np.float32)
        return Candidates(ids, raw[:, 0], raw[:, -1], central[:, 0], central[:, -1], bm25, typed, boosted)

    def fuse(self, c: Candidates) -> np.ndarray:
        """The hand-set first-stage score of each candidate (docs/design.md "Retrieval settings")."""
        cfg = self.settings
        sims0 = c.dense - cfg.centrality_penalty * c.central_dense
        sims1 = c.context - cfg.centrality_penalty * c.central_context
        mixed = (1 - cfg.window_weight) * sims0 + cfg.window_weight * sims1
        if cfg.fusion == "rrf":
            fused = _rrf(mixed) + _rrf(c.bm25)
        else:
            fused = mixed + cfg.bm25_weight * np.minimum(c.bm25 / cfg.bm25_scale, 1.0)
        return (fused + cfg.answer_type_boost * c.typed + c.boost).astype(np.float32)

    def search(
        self,
        query: np.ndarray,
        tokens: list[str],
        k: int,
        *,
        boost: dict[int, float] | None = None,
        answer_type: str | None = None,
        exclude: frozenset[int] | None = None,
    ) -> list[Hit]:
        """Rank sentences for a query vector and its BM25 tokens by the hand-set fusion; best first."""
        if self.data.vectors.ntotal == 0:
            return []
        c = self.candidates(query, tokens, k, boost=boost, answer_type=answer_type, exclude=exclude)
        fused = self.fuse(c)
        order = np.argsort(-fused, kind="stable")[:k]
        return [
            Hit(int(c.ids[j]), float(fused[j]), float(c.dense[j]), float(c.context[j]), float(c.bm25[j])) for j in order
        ]

    def _lexical_for(self, ids: np.ndarray, lexical: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """BM25 of sentences ``ids`` from :meth:`SparseIndex.matches`'s (rows, scores); 0 where absent."""
        rows, scores = lexical
        pos = self._sparse_pos[ids]
        if len(rows) == 0:
            return np.zeros(len(ids), dtype=np.float32)
        at = np.minimum(np.searchsorted(rows, pos), len(rows) - 1)
        return np.where((pos >= 0) & (rows[at] == pos), scores[at], 0.0).astype(np.float32)

    def neighbours(self, source: Source) -> list[int]:
        """Sentence ids of a cited sentence and its citable neighbours in the same passage."""
        sentences = self.data.sentences
        i = sentences.find(source.doc, source.start)
        if i is None:
            return []
        return [
            j for j in (i - 1, i, i + 1)
            if 0 <= j < len(sentences) and self._first_row[j] >= 0 and sentences.same_passage(i, j)
        ]  # fmt: skip

    def rank_documents(self, question: str, n: int) -> dict[str, float]:
        """Documents ranked by their best sentence: ``{doc id: score}``, best first."""
        hits = self.search(self.embed(question), self.tokens(question), n * 10, answer_type=answer_type(question))
        best: dict[str, float] = {}
        for hit in hits:
            doc = self.data.sentences[hit.sentence].doc
            if doc not in best:
                best[doc] = hit.score
        return dict(list(best.items())[:n])

    def context(self, sentence: int) -> str:
        """What precedes a sentence for the verifier: its document's title and the previous sentence of its passage."""
        from qa.verify import context_of

        s = self.data.sentences[sentence]
        return context_of(self.data.sentences, sentence, self.data.documents[s.doc].title)

    def tokens(self, text: str) -> list[str]:
        return self.data.sparse.tokenize(text)

    def _words_of(self, sentence: int) -> tuple[frozenset[str], frozenset[str]]:
        """(stemmed words of a sentence, of its passage): ranker features (``words`` keeps the WORDS_CACHE latest)."""
        s = self.data.sentences[sentence]
        doc = self.data.documents[s.doc].text
        return frozenset(self.tokens(s.text)), frozenset(self.tokens(doc[s.passage_start : s.passage_end]))
        s = self.data.sentences[sentence]
        doc = self.data.documents[s.doc].text
        cached = (frozenset(self.tokens(s.text)), frozenset(self.tokens(doc[s.passage_start : s.passage_end])))
        with self._words_lock:  # threads may compute one twice, never corrupt the order
            self._words[sentence] = cached
            if len(self._words) > WORDS_CACHE:
                self._words.popitem(last=False)
        return cached
