"""BM25 over the citable sentences: built with bm25s, saved as .npy + JSON (no pickle), scored with numpy."""

from __future__ import annotations

import json
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
STOPWORDS_FILE = "stopwords.json"


@lru_cache(maxsize=1)
def _stemmer():  # type: ignore[no-untyped-def]
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    return frozenset(_bm25s().stopwords.STOPWORDS_EN_PLUS)


def tokenize(text: str, stopwords: frozenset[str] | None = None) -> list[str]:
    """Lower-cased, stop words removed, Snowball-stemmed word tokens."""
    stop = _stopwords() if stopwords is None else stopwords
    words = [w for w in _TOKEN.findall(text.lower().replace("’", "'")) if w not in stop]
    return list(_stemmer().stemWords(words))


class SparseIndex:
    """BM25 scores of a question against every indexed sentence.

    Built with bm25s; read back with numpy alone (memory-mapped arrays, the
    vocabulary and stop words from JSON), so answering never imports bm25s or
    scipy. Scores equal bm25s's ``get_scores`` (Lucene BM25: the per-token
    scores are precomputed, a query sums the columns of its tokens).
    """

    def __init__(
        self,
        data: np.ndarray,
        indices: np.ndarray,
        indptr: np.ndarray,
        vocab: dict[str, int],
        num_docs: int,
        stopwords: frozenset[str],
    ) -> None:
        self._data, self._indices, self._indptr = data, indices, indptr
        self._vocab = vocab
        self.num_docs = num_docs
        self.stopwords = stopwords
        self._bm25 = None  # the bm25s object of a fresh build, kept for saving

    @classmethod
    def build(cls, texts: list[str]) -> SparseIndex:
        stopwords = _stopwords()
        if not texts:  # a corpus with nothing citable: an empty index (bm25s cannot build one)
            empty = cls(np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int32), {}, 0, stopwords)
            return empty
        bm25 = _bm25s().BM25(method="lucene")
        corpus = [tokenize(t, stopwords) or [""] for t in texts]
        bm25.index(corpus, show_progress=False)
        scores = bm25.scores
        index = cls(scores["data"], scores["indices"], scores["indptr"], bm25.vocab_dict, len(texts), stopwords)
        index._bm25 = bm25
        return index

    def save(self, folder: Path) -> None:
        if self._bm25 is not None:
            self._bm25.save(str(folder), allow_pickle=False, show_progress=False)
        elif self.num_docs == 0:  # the empty index, in bm25s's layout
            folder.mkdir(parents=True, exist_ok=True)
            for name, array in (("data", self._data), ("indices", self._indices), ("indptr", self._indptr)):
                np.save(folder / f"{name}.csc.index.npy", array, allow_pickle=False)
            (folder / "vocab.index.json").write_text("{}", encoding="utf-8")
            params = {"k1": 1.5, "b": 0.75, "delta": 0.5, "method": "lucene", "idf_method": "lucene", "num_docs": 0}
            (folder / "params.index.json").write_text(json.dumps(params), encoding="utf-8")
        else:
            raise ValueError("only a freshly built BM25 index can be saved")
        (folder / STOPWORDS_FILE).write_text(json.dumps(sorted(self.stopwords)), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> SparseIndex:
        """Read a saved index (arrays memory-mapped, read-only)."""
        params = json.loads((folder / "params.index.json").read_text(encoding="utf-8"))
        if params.get("method", "lucene") != "lucene":
            raise ValueError(f"{folder}: BM25 variant {params.get('method')!r} is not supported")
        vocab = json.loads((folder / "vocab.index.json").read_text(encoding="utf-8"))

        def array(name: str) -> np.ndarray:
            return np.load(folder / name, mmap_mode="r", allow_pickle=False)

        stopwords = frozenset(json.loads((folder / STOPWORDS_FILE).read_text(encoding="utf-8")))
        data, indices = array("data.csc.index.npy"), array("indices.csc.index.npy")
        indptr = array("indptr.csc.index.npy")
        # bm25s's vocabulary may hold one token more than the matrix has columns (the empty token).
        if not 0 < len(indptr) <= len(vocab) + 1 or len(data) != len(indices) or int(indptr[-1]) != len(data):
            raise ValueError(f"{folder}: BM25 arrays and vocabulary differ in size")
        return cls(data, indices, indptr, vocab, int(params["num_docs"]), stopwords)

    def tokenize(self, text: str) -> list[str]:
        """The question's tokens, split as the index's sentences were."""
        return tokenize(text, self.stopwords)

    def matches(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the sentences that hold any of the tokens, rows ascending, scores > 0.

        Reads only the tokens' postings (a token asked twice counts twice, as in
        bm25s): its cost follows how many sentences hold the question's words,
        not the corpus's size, unless they are much of it.
        """
        columns = len(self._indptr) - 1
        ids = [i for i in (self._vocab.get(t, columns) for t in tokens) if i < columns]
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        postings = np.concatenate([np.arange(self._indptr[i], self._indptr[i + 1]) for i in ids])
        rows, weights = np.asarray(self._indices[postings]), np.asarray(self._data[postings])
        if len(rows) * 8 < self.num_docs:
            found, inverse = np.unique(rows, return_inverse=True)
            scores = np.bincount(inverse.ravel(), weights=weights)
        else:  # much of the corpus: one dense pass is cheaper than sorting
            dense = np.bincount(rows, weights=weights, minlength=self.num_docs)
            found = np.flatnonzero(dense)
            scores = dense[found]
        keep = scores > 0
        return found[keep].astype(np.int64), scores[keep].astype(np.float32)

    def scores(self, tokens: list[str]) -> np.ndarray:
        """Every sentence's BM25 score (0 for those without the tokens), row by row."""
        dense = np.zeros(self.num_docs, dtype=np.float32)
        rows, scores = self.matches(tokens)
        dense[rows] = scores
        return dense


# --- abbreviations -----------------------------------------------------------------
# A definition "long form (SF)" or 'long form ("SF")': SF is 2-10 characters, starts with a
# letter and has at least two capitals (so "(see)", "(i)" and "(1998)" are not definitions).
_DEFINITION = re.compile(r"\(\s*[\"'“‘]?([A-Za-z][A-Za-z0-9&-]{1,9})[\"'”’]?\s*\)")
_SHORT_WORD = re.compile(r"(?<![\w&-])[A-Za-z][A-Za-z0-9&-]*(?![\w&-])")  # a short form as written in a sentence


def _long_form_words(short: str) -> int:
    """The most words a long form of ``short`` may have (Schwartz and Hearst's limit)."""
    return min(len(short) + 5, 2 * len(short))


def _long_form(short: str, before: str) -> str | None:
    """The words of ``before`` that ``short`` abbreviates (Schwartz and Hearst, 2003), or None.

    Each of the short form's letters and digits, from its last, is found in
    ``before`` right to left, its first one at the start of a word.
    """
    s, i = len(short) - 1, len(before) - 1
    while s >= 0:
        c = short[s].lower()
        if not c.isalnum():
            s -= 1
            continue
        while i >= 0 and (before[i].lower() != c or (s == 0 and i > 0 and before[i - 1].isalnum())):
            i -= 1
        if i < 0:
            return None
        i, s = i - 1, s - 1
    start = before.rfind(" ", 0, i + 1) + 1
    found = before[start:].strip()
    # the long form must be longer than the short one and not run over most of the sentence
    return found if len(found) > len(short) and len(found.split()) <= _long_form_words(short) else None


def abbreviations(texts: list[str]) -> dict[str, str]:
    """Short form -> long form for every abbreviation these texts (one document's sentences) define."""
    found: dict[str, str] = {}
    for text in texts:
        if "(" not in text:
            continue
        for m in _DEFINITION.finditer(text):
            short = m.group(1)
            if sum(c.isupper() for c in short) < 2 or short in found:
                continue
            words = text[: m.start()].split()[-_long_form_words(short) :]
            long = _long_form(short, " ".join(words).strip(" \"'“”‘’,;:"))
            if long:
                found[short] = long
    return found


def expand_abbreviations(texts: list[str], defined: dict[str, str]) -> list[str]:
    """``texts`` with the long form of each abbreviation a text uses but does not spell out appended.

    For BM25 only ("The LEP individual may not use family members" also
    matches a question about "limited English proficiency"); the cited text is unchanged.
    """
    if not defined:
        return texts
    out = []
    for text in texts:
        # a lookup per word, not one pattern of every short form: a glossary defines hundreds
        words = _SHORT_WORD.findall(text)
        parts = [p for w in words if "-" in w for p in w.split("-")]  # "STS-based", "COVID-19" itself too
        shorts = dict.fromkeys(w for w in words + parts if w in defined)
        extra = [defined[s] for s in shorts if defined[s].lower() not in text.lower()]
        out.append(" ".join([text, *extra]) if extra else text)
    return out
