"""Candidates -> ranked, with a calibrated confidence: a learned linear ranker and a Platt calibrator.

The first stage (``Retriever.candidates`` + the hand-set ``Retriever.fuse``)
keeps the best ``depth`` sentences; each gets the features below and the
ranker's score (a logistic-regression logit: "this sentence holds the
answer"). An optional :class:`Verifier` reads question and sentence together
for the best few; its logit is one more feature. The confidence is the
calibrated probability that the top sentence answers the question.

Weights come from ``qa train`` (``qa/train.py``) and ship as JSON in
``qa/models/``; answering needs only numpy.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qa.retrieve import Candidates
from qa.store import sha256_file
from qa.types import QAError, Sentence

FORMAT = 1
MODELS = Path(__file__).parent / "models"
SHIPPED = MODELS / "ranker.json"
# Candidates the verifier reads. Reading 3 saved 9 ms an answer but lost the article's answers that
# the first ranker puts 4th or 5th (dev 19/20, held-out 17/20; docs/benchmarks.md, "Latency").
VERIFY_TOP = 5
# ... less those the first ranker puts more than this many logits behind its best: a candidate that
# far behind almost never wins (SQuAD, 5 folds: top-1 by ranking unchanged), and an answerable
# question's verifier then reads 2 or 3 candidates, not 5 (docs/benchmarks.md, "Latency").
VERIFY_MARGIN = 4.0
# Below this best cosine a question's topic is rarely in the corpus (0.8% of SQuAD's answerable
# questions): "topic_gap" lets a calibrator fall steeply there (docs/benchmarks.md, "Tried and not shipped").
TOPIC_COSINE = 0.4

FEATURES: tuple[str, ...] = (
    "dense",  # cosine, sentence alone
    "context",  # cosine, sentence in its window
    "central_dense",  # closeness to the corpus centroid (generic sentences)
    "central_context",
    "bm25",  # min(BM25 / 10, 1)
    "bm25_rel",  # BM25 / best BM25 among the candidates
    "typed",  # holds what a how-many/when/percentage question asks for
    "has_type",  # the question asks for a typed answer
    "fused",  # the hand-set first-stage score
    "fused_margin",  # fused - best fused
    "context_margin",  # context - best context
    "dense_margin",
    "rank_fused",  # log(1 + rank) under each first-stage score
    "rank_context",
    "rank_bm25",
    "passage_context",  # best context cosine in the same passage
    "passage_share",  # share of the candidates in the same passage
    "document_margin",  # best fused in the same document - best fused overall
    "document_share",  # share of the candidates in the same document
    "length",  # log of the sentence's length in characters
    "boost",  # follow-up: the previous answer or its neighbour
    "follow_up",  # the question was read as a follow-up
    "overlap",  # share of the question's (stemmed, stop-word-free) words in the sentence
    "overlap_margin",  # overlap - best overlap among the candidates
    "passage_overlap",  # share of the question's words in the sentence's passage
    "novel",  # share of the sentence's words not in the question (an answer adds something)
    "who_name",  # a who-question and a sentence naming someone (a capitalised word past the first)
    "where_place",  # a where-question and "in/at/from/near + capitalised word"
    "verifier",  # the verifier's logit (0 where it did not read the candidate)
    "verified",  # 1 for the first-stage top ``verify_top`` a verifier read
)


class RankerError(QAError):
    """A ranker file is missing, corrupted or of another format."""


class Verifier(Protocol):
    """Reads a question with each sentence; returns one logit per sentence ("this answers it")."""

    def scores(self, question: str, sentences: list[str], contexts: list[str] | None = None) -> np.ndarray:
        """``contexts[j]``: what precedes ``sentences[j]`` (title, previous sentence), for a verifier that reads it."""
        ...


@dataclass(frozen=True)
class Ranked:
    """Candidates of one question after ranking: best first."""

    ids: np.ndarray  # sentence ids
    scores: np.ndarray  # ranker logits
    features: np.ndarray  # (n, len(FEATURES)) in FEATURES order
    confidence: float  # calibrated probability that ids[0] answers


_WHO = re.compile(r"^\s*(who|whom|whose)\b|\b(which|what) (person|man|woman|people)\b", re.I)
_WHERE = re.compile(r"^\s*where\b|\b(which|what) (city|country|place|town|state)\b", re.I)
_NAME = re.compile(r"(?<=\w[ ,])[A-Z][a-z]+")
_PLACE = re.compile(r"\b(in|at|from|near|to) (the )?[A-Z]")


def _log_rank(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values), dtype=np.float32)
    ranks[np.argsort(-values, kind="stable")] = np.arange(len(values))
    return np.log1p(ranks)


def candidate_features(
    c: Candidates,
    fused: np.ndarray,
    sentences: Sequence[Sentence],
    *,
    has_type: bool,
    follow_up: bool,
    depth: int,
    question: str = "",
    verifier: Verifier | None = None,
    verify_top: int = VERIFY_TOP,
    words: Callable[[int], tuple[frozenset[str], frozenset[str]]] | None = None,
    question_words: frozenset[str] = frozenset(),
    verify_rows: Callable[[np.ndarray], np.ndarray] | None = None,
    preceding: Callable[[int], str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(sentence ids, feature matrix) of the ``depth`` best candidates by the first-stage score, in that order.

    With a ``verifier``, it reads the question with the candidates at positions
    ``verify_rows(features)`` (the cascade's choice, :meth:`Ranker.verify_rows`;
    default: the first ``verify_top`` in the first-stage order) and its logits
    fill "verifier" (see :func:`add_verification`).
    ``words(sentence id)`` gives (sentence words, passage words) for the overlap features;
    ``preceding(sentence id)`` what precedes a sentence, for a verifier that reads it.
    """
    keep = np.argsort(-fused, kind="stable")[:depth]
    ids = c.ids[keep]
    n = len(ids)
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    if n == 0:
        return ids, x
    dense, context, bm25, f = c.dense[keep], c.context[keep], c.bm25[keep], fused[keep]
    x[:, 0], x[:, 1] = dense, context
    x[:, 2], x[:, 3] = c.central_dense[keep], c.central_context[keep]
    x[:, 4] = np.minimum(bm25 / 10.0, 1.0)
    x[:, 5] = bm25 / max(float(bm25.max()), 1e-6)
    x[:, 6] = c.typed[keep]
    x[:, 7] = float(has_type)
    x[:, 8] = f
    x[:, 9] = f - f.max()
    x[:, 10] = context - context.max()
    x[:, 11] = dense - dense.max()
    x[:, 12], x[:, 13], x[:, 14] = _log_rank(f), _log_rank(context), _log_rank(bm25)
    passages = [(sentences[i].doc, sentences[i].passage_start) for i in ids]
    docs = [sentences[i].doc for i in ids]
    p_best: dict[tuple[str, int], float] = {}
    p_count: dict[tuple[str, int], int] = {}
    d_best: dict[str, float] = {}
    d_count: dict[str, int] = {}
    for j in range(n):
        p, d = passages[j], docs[j]
        p_best[p] = max(p_best.get(p, -9.0), float(context[j]))
        p_count[p] = p_count.get(p, 0) + 1
        d_best[d] = max(d_best.get(d, -9.0), float(f[j]))
        d_count[d] = d_count.get(d, 0) + 1
    top = float(f.max())
    for j in range(n):
        x[j, 15] = p_best[passages[j]]
        x[j, 16] = p_count[passages[j]] / n
        x[j, 17] = d_best[docs[j]] - top
        x[j, 18] = d_count[docs[j]] / n
        x[j, 19] = math.log(max(len(sentences[ids[j]].text), 1))
    x[:, 20] = (c.boost[keep] > 0).astype(np.float32)
    x[:, 21] = float(follow_up)
    col = FEATURES.index("overlap")
    if words is not None and question_words:
        nq = len(question_words)
        for j in range(n):
            sw, pw = words(int(ids[j]))
            x[j, col] = len(question_words & sw) / nq
            x[j, col + 2] = len(question_words & pw) / nq
            x[j, col + 3] = len(sw - question_words) / max(len(sw), 1)
        x[:, col + 1] = x[:, col] - x[:, col].max()
    if _WHO.search(question):
        x[:, col + 4] = [bool(_NAME.search(sentences[i].text)) for i in ids]
    if _WHERE.search(question):
        x[:, col + 5] = [bool(_PLACE.search(sentences[i].text)) for i in ids]
    if verifier is not None:
        rows = verify_rows(x) if verify_rows is not None else np.arange(min(n, verify_top))
        x = add_verification(x, ids, question, sentences, verifier, rows, preceding)
    return ids, x


def add_verification(
    x: np.ndarray,
    ids: np.ndarray,
    question: str,
    sentences: Sequence[Sentence],
    verifier: Verifier,
    rows: np.ndarray,
    context: Callable[[int], str] | None = None,
) -> np.ndarray:
    """``x`` with the verifier's logits for candidates ``rows`` (positions in ``ids``) in "verifier" and
    "verified" set to 1 there; the other candidates get 0 in both."""
    x = x.copy()
    v = FEATURES.index("verifier")
    x[:, v : v + 2] = 0.0
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return x
    chosen = [int(ids[j]) for j in rows]
    # only a verifier trained with context reads it (``reads_context``); the others cost nothing for it
    reads = context is not None and bool(getattr(verifier, "reads_context", False))
    contexts = [context(i) for i in chosen] if reads and context is not None else None
    logits = verifier.scores(question, [sentences[i].text for i in chosen], contexts)
    x[rows, v] = np.asarray(logits, dtype=np.float32).reshape(-1)[: len(rows)]
    x[rows, v + 1] = 1.0
    return x


# What the confidence is read from, for the best-scored candidate ("best"): is it ahead of the rest,
# does the verifier say it answers (and does it say so of anything), is the question's topic in the
# corpus at all, and does the sentence hold the kind of answer asked for.
CALIBRATION_INPUTS = (
    "top",  # the best candidate's ranker logit
    "margin",  # its lead over the second
    "cosine",  # its best cosine (sentence or window)
    "bm25",  # its scaled BM25
    "verifier_top",  # the verifier's logit for it (-10 when unread)
    "verifier_max",  # the verifier's best logit over what it read (-10 when none)
    "verifier_margin",  # the verifier's best logit minus its second (5 with fewer than two)
    "overlap",  # share of the question's words in it
    "passage_overlap",  # ... in its passage
    "best_cosine",  # best sentence cosine among all candidates: is the topic in the corpus
    "topic_gap",  # how far best_cosine falls below TOPIC_COSINE (0 above it): off-topic, steeply
    "best_bm25",  # best scaled BM25 among all candidates
    "has_type",  # the question asks for a typed answer
    "typed",  # the best candidate holds one
    "length",  # log of its length
    "novel",  # share of its words not in the question
)
# The inputs ``qa train`` uses unless told otherwise (and those of files that name none). The
# verifier's inputs raise SQuAD's abstention on unanswerable questions (docs/benchmarks.md, "Answer quality")
# but make the article's answerable questions abstain more often: the verifier, trained on
# encyclopaedia questions, is less sure on news text, so the default leaves them out.
DEFAULT_CALIBRATION_INPUTS = ("top", "margin", "cosine", "bm25")


def calibration_inputs(
    scores: np.ndarray, x: np.ndarray, names: Sequence[str] = DEFAULT_CALIBRATION_INPUTS
) -> np.ndarray:
    """The calibrator's inputs (``names``, from :data:`CALIBRATION_INPUTS`) for candidates scored ``scores``."""
    if len(scores) == 0:
        empty = {"top": -10.0, "verifier_top": -10.0, "verifier_max": -10.0, "verifier_margin": 5.0,
                 "topic_gap": TOPIC_COSINE}  # fmt: skip
        return np.array([empty.get(n, 0.0) for n in names])
    best = int(np.argmax(scores))
    top = float(scores[best])
    second = float(np.max(np.delete(scores, best))) if len(scores) > 1 else top - 5.0
    v = FEATURES.index("verifier")
    read = x[:, v + 1] > 0
    logits = np.sort(x[read, v])[::-1]
    best_cosine = float(x[:, 0].max())

    def feature(name: str) -> float:
        return float(x[best, FEATURES.index(name)])

    values = {
        "top": top,
        "margin": top - second,
        "cosine": float(max(x[best, 0], x[best, 1])),
        "bm25": float(x[best, 4]),
        "verifier_top": float(x[best, v]) if read[best] else -10.0,
        "verifier_max": float(logits[0]) if len(logits) else -10.0,
        "verifier_margin": float(logits[0] - logits[1]) if len(logits) > 1 else 5.0,
        "best_cosine": best_cosine,
        "topic_gap": max(0.0, TOPIC_COSINE - best_cosine),
        "best_bm25": float(x[:, 4].max()),
    }
    return np.array([values[n] if n in values else feature(n) for n in names])


def parse_verify_margin(text: str) -> float | None:
    """A verify margin as typed: a number of logits ≥ 0, or "all" (None: the verifier reads all ``verify_top``).

    Raises ``ValueError`` for anything else.
    """
    if text.strip().lower() == "all":
        return None
    margin = float(text)
    if not 0 <= margin < math.inf:
        raise ValueError(f"a verify margin is a number of logits ≥ 0 or 'all', not {text!r}")
    return margin


def select_verified(
    x: np.ndarray, top: int, margin: float | None, pre_weights: np.ndarray | None, pre_bias: float = 0.0
) -> np.ndarray:
    """Positions the verifier reads: the ``top`` best under the first ranker ``x @ pre_weights + pre_bias``
    (the first-stage order without one), less those more than ``margin`` logits behind the best."""
    if pre_weights is None:
        return np.arange(min(len(x), top))
    pre = x @ pre_weights + pre_bias
    rows = np.argsort(-pre, kind="stable")[:top]
    if margin is not None and len(rows):
        rows = rows[pre[rows] >= pre[rows[0]] - margin]
    return rows


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


@dataclass(frozen=True)
class Ranker:
    """A learned linear ranker with its Platt calibrator and abstention threshold (see ``qa train``)."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    calibrator: tuple[float, ...]  # weights of CALIBRATION_INPUTS, then the intercept
    threshold: float  # abstain when the confidence is below this
    depth: int = 30  # first-stage candidates that are ranked
    verify_top: int = VERIFY_TOP  # candidates the verifier reads
    meta: dict[str, Any] = field(default_factory=dict)
    # The cascade's first ranker: a linear score on the raw features (no verifier) that picks the
    # candidates the verifier reads. None: the first-stage order picks them.
    pre_weights: np.ndarray | None = None
    pre_bias: float = 0.0
    calibration: tuple[str, ...] = DEFAULT_CALIBRATION_INPUTS  # the calibrator's inputs, in its weights' order
    # The verifier skips candidates the first ranker puts more than this many logits behind its best
    # (None: it reads all ``verify_top``).
    verify_margin: float | None = None

    @property
    def uses_verifier(self) -> bool:
        return bool(self.weights[FEATURES.index("verifier")] or self.weights[FEATURES.index("verified")])

    def verify_rows(self, x: np.ndarray) -> np.ndarray:
        """Positions of the candidates the verifier reads: the first ranker's ``verify_top`` best, less
        those it puts more than ``verify_margin`` logits behind its best (:func:`select_verified`)."""
        return select_verified(x, self.verify_top, self.verify_margin, self.pre_weights, self.pre_bias)

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def confidence(self, scores: np.ndarray, x: np.ndarray) -> float:
        """Probability that the best-scored candidate answers (Platt scaling of :func:`calibration_inputs`)."""
        if len(scores) == 0:
            return 0.0
        return self.probability(calibration_inputs(scores, x, self.calibration))

    def probability(self, inputs: np.ndarray) -> float:
        return _sigmoid(float(np.dot(self.calibrator[:-1], inputs)) + self.calibrator[-1])

    def rank(self, ids: np.ndarray, x: np.ndarray) -> Ranked:
        """Order candidates (features from :func:`candidate_features`) by the learned score."""
        scores = self.score(x)
        order = np.argsort(-scores, kind="stable")
        return Ranked(ids[order], scores[order], x[order], self.confidence(scores, x))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": list(self.features),
            "mean": [round(float(v), 6) for v in self.mean],
            "scale": [round(float(v), 6) for v in self.scale],
            "weights": [round(float(v), 6) for v in self.weights],
            "bias": round(self.bias, 6),
            "calibration_inputs": list(self.calibration),
            "calibrator": [round(v, 6) for v in self.calibrator],
            "threshold": round(self.threshold, 6),
            "depth": self.depth,
            "verify_top": self.verify_top,
            **({"verify_margin": self.verify_margin} if self.verify_margin is not None else {}),
            **({"pre": {"weights": [round(float(v), 6) for v in self.pre_weights], "bias": round(self.pre_bias, 6)}}
               if self.pre_weights is not None else {}),
            "meta": self.meta,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ranker:
        if d.get("format") != FORMAT:
            raise RankerError(f"ranker format {d.get('format')!r} is not {FORMAT}; retrain with `qa train`")
        names = tuple(d["features"])
        if set(names) - set(FEATURES):
            raise RankerError(f"ranker uses features this version lacks: {sorted(set(names) - set(FEATURES))}")
        # Features the file does not know get weight 0: older files keep working.
        pos = {n: i for i, n in enumerate(names)}
        full = [np.array([d[k][pos[n]] if n in pos else v for n in FEATURES], dtype=np.float32)
                for k, v in (("mean", 0.0), ("scale", 1.0), ("weights", 0.0))]  # fmt: skip
        calibrator = tuple(float(v) for v in d["calibrator"])
        calibration = tuple(d.get("calibration_inputs", DEFAULT_CALIBRATION_INPUTS))
        if set(calibration) - set(CALIBRATION_INPUTS):
            raise RankerError(
                f"the calibrator reads inputs this version lacks: {sorted(set(calibration) - set(CALIBRATION_INPUTS))}"
            )
        if len(calibrator) != len(calibration) + 1:
            raise RankerError(f"the calibrator has {len(calibrator)} numbers, not {len(calibration) + 1}")
        pre = d.get("pre")
        pre_weights = None
        if pre is not None:
            pre_weights = np.array([pre["weights"][pos[n]] if n in pos else 0.0 for n in FEATURES], dtype=np.float32)
        return cls(FEATURES, full[0], full[1], full[2], float(d["bias"]), calibrator, float(d["threshold"]),
                   int(d.get("depth", 30)), int(d.get("verify_top", 5)), dict(d.get("meta", {})),
                   pre_weights, float(pre["bias"]) if pre is not None else 0.0, calibration,
                   None if d.get("verify_margin") is None else float(d["verify_margin"]))  # fmt: skip

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def load_ranker(path: str | Path | None = None) -> Ranker:
    """Read a ranker JSON (default: the shipped ``qa/models/ranker.json``)."""
    path = Path(path) if path is not None else SHIPPED
    try:
        return Ranker.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise RankerError(f"cannot read the ranker {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise RankerError(f"{path} is not a ranker file: {exc}") from exc


def load_verifier(path: str | os.PathLike[str]) -> Verifier:
    """The verifier model at ``path``, through ``qa.verify.load_verifier`` (the ONNX cross-encoder).

    Contract for ``qa/verify.py``: ``load_verifier(path) -> Verifier`` whose
    ``scores(question, sentences)`` returns one float32 logit per sentence.
    ``qa train --verifier PATH`` records ``PATH``'s file name in the ranker's
    ``meta["verifier"]``; ``answer()`` then loads that file from ``qa/models/``.
    """
    from qa import reader, verify

    if reader.is_reader(Path(path)):
        return reader.load_reader(Path(path))
    return verify.load_verifier(Path(path))


def file_sha256(path: str | Path) -> str:
    return sha256_file(Path(path))
