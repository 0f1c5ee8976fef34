"""BM25 over the citable sentences, with bm25s (saved as .npy + JSON, no pickle)."""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _bm25s():  # type: ignore[no-untyped-def]
    import bm25s

    # bm25s sets its logger to DEBUG when imported and logs every build: quiet it after that.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


_TOKEN = re.compile(r"\w+")


@lru_cache(maxsize=1)
def _stemmer():  # type: ignore[no-untyped-def]
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    return frozenset(_bm25s().stopwords.STOPWORDS_EN_PLUS)


def tokenize(text: str) -> list[str]:
    """Lower-cased, stop words removed, Snowball-stemmed word tokens."""
    stop = _stopwords()
    words = [w for w in _TOKEN.findall(text.lower().replace("’", "'")) if w not in stop]
    return list(_stemmer().stemWords(words))


class SparseIndex:
    """BM25 scores of a question against every indexed sentence."""

    def __init__(self, bm25) -> None:  # type: ignore[no-untyped-def]
        self._bm25 = bm25
        self._vocab: dict[str, int] = bm25.vocab_dict

    @classmethod
    def build(cls, texts: list[str]) -> SparseIndex:
        bm25 = _bm25s().BM25()
        corpus = [tokenize(t) or [""] for t in texts]
        bm25.index(corpus, show_progress=False)
        return cls(bm25)

    def save(self, folder: Path) -> None:
        self._bm25.save(str(folder), allow_pickle=False, show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> SparseIndex:
        return cls(_bm25s().BM25.load(str(folder), allow_pickle=False, show_progress=False, load_corpus=False))

    def scores(self, tokens: list[str]) -> np.ndarray:
        known = [t for t in tokens if t in self._vocab]
        if not known:
            return np.zeros(self._bm25.scores["num_docs"], dtype=np.float32)
        return np.asarray(self._bm25.get_scores(known), dtype=np.float32)
