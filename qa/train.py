"""Fit the ranker and its calibrator on SQuAD-format data: ``qa train --squad FILE``.

Every question is asked three ways against one index of all articles:
as is ("answerable"), with the sentences touching its gold spans excluded
from the candidates ("dropped": in-topic but unanswerable) and with its whole
article excluded ("off-corpus"). The ranker (logistic regression over
``qa.rank.FEATURES``) learns from the answerable questions' candidates:
label 1 for a sentence holding a whole gold span. The calibrator (Platt:
logistic regression on the top logit and its margin over the second) learns
"the top sentence answers" from all three, scored by rankers fit on the
other folds' articles, so it sees held-out scores, as users' questions will
be. The threshold is the confidence under which at most 3.5% of those
held-out answerable questions fall.

scikit-learn is needed here only; answering needs numpy and the JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.answer import Engine
from qa.rank import (
    DEFAULT_CALIBRATION_INPUTS,
    FEATURES,
    VERIFY_MARGIN,
    VERIFY_TOP,
    Ranker,
    Verifier,
    add_verification,
    calibration_inputs,
    candidate_features,
    load_verifier,
    select_verified,
)
from qa.retrieve import answer_type
from qa.squad import GoldMap, SquadData, SquadQuestion, folds_of, prepare
from qa.store import sha256_file
from qa.types import QAError

log = logging.getLogger(__name__)

CONDITIONS = ("answerable", "dropped", "off_corpus")  # and "unanswerable": a v2.0 question with no answer
DEPTH = 30  # first-stage candidates the ranker orders
ABSTAIN_QUANTILE = 0.035  # answerable questions allowed under the threshold when fitting it (limit: 5% held out)
MAX_HIT_CHARS = 400
BATCH = 64  # questions embedded per call


@dataclass(frozen=True)
class Example:
    """One question asked under one condition: its ranked-by-first-stage candidates and their labels."""

    question: SquadQuestion
    condition: str
    ids: np.ndarray
    x: np.ndarray  # (n, len(FEATURES))
    labels: np.ndarray  # 1 where the candidate is a hit (holds a whole gold span, <= 400 characters)
    seconds: float  # first-stage time, the question's embedding excluded (it is batch-encoded)

    @property
    def baseline_confidence(self) -> float:
        """Today's confidence: the best first-stage candidate's cosine, alone or in its window."""
        return float(max(self.x[0, 0], self.x[0, 1])) if len(self.ids) else 0.0


def collect(
    data: SquadData,
    engine: Engine,
    *,
    questions: Sequence[SquadQuestion] | None = None,
    conditions: Sequence[str] = CONDITIONS,
    depth: int = DEPTH,
    progress: Callable[[int, int], None] | None = None,
    verifier: Verifier | None = None,
    verify_top: int = VERIFY_TOP,
) -> list[Example]:
    """Ask each question under each condition; the features and labels of its top ``depth`` candidates."""
    retriever = engine.retriever()
    sentences = retriever.data.sentences
    gold = GoldMap(sentences)
    hit_ok = np.array([len(s.text) <= MAX_HIT_CHARS for s in sentences])
    questions = list(questions if questions is not None else data.questions)
    examples = []
    vectors = np.zeros((0, 0), dtype=np.float32)
    for n, q in enumerate(questions, 1):
        if (n - 1) % BATCH == 0:
            # one batch call embeds far faster than one call per question
            vectors = retriever.encoder.encode([x.question for x in questions[n - 1 : n - 1 + BATCH]])
        vector = vectors[(n - 1) % BATCH]
        covering = gold.covering(q)
        # a SQuAD v2.0 question its paragraph does not answer is asked once, as it is
        for condition in conditions if q.answerable else ("unanswerable",):
            exclude = None
            if condition == "dropped":
                exclude = gold.overlapping(q)
            elif condition == "off_corpus":
                exclude = gold.article(q.article)
            started = time.perf_counter()
            c, fused, follow_up, _ = engine.candidates(retriever, q.question, [], exclude=exclude, vector=vector)
            ids, x = candidate_features(
                c, fused, sentences, has_type=answer_type(q.question) is not None, follow_up=follow_up,
                depth=depth, question=q.question, verifier=verifier, verify_top=verify_top,
                words=retriever.words, question_words=frozenset(retriever.tokens(q.question)),
            )  # fmt: skip
            seconds = time.perf_counter() - started
            labels = np.array([int(i) in covering and hit_ok[i] for i in ids], dtype=np.int8)
            examples.append(Example(q, condition, ids, x, labels, seconds))
        if progress is not None:
            progress(n, len(questions))
    return examples


# Learned from the data. Left out: features these questions never vary (follow-ups; the verifier
# when none is given), and those that depend on the corpus's size (candidate ranks and shares):
# a 24-article corpus and a one-article one give them different meanings.
LEARNED: tuple[str, ...] = tuple(
    f for f in FEATURES
    if f not in {"boost", "follow_up", "verifier", "verified", "rank_fused", "rank_context", "rank_bm25",
                 "passage_share", "document_share"}
)  # fmt: skip
# SQuAD has no follow-ups to learn the previous answer's pull from: a fixed prior, in logits,
# for the previous answer's sentence and its neighbours (checked on dev_chats and the rule-made chats).
BOOST_LOGIT = 1.5


class TrainError(QAError):
    """Training cannot run: a missing package, or data with nothing to learn from."""


def _logistic() -> Any:
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise TrainError("qa train needs scikit-learn: pip install 'qa-alliance[train]'") from exc
    return LogisticRegression


def fit_ranker(
    examples: Sequence[Example], use: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, weights, bias) of a logistic regression: candidate -> "holds the answer".

    Learns from answerable examples that have a hit among their candidates
    (the others teach nothing about order), over the features in ``use``
    (default :data:`LEARNED`, plus the verifier's when it ran); the others get
    weight 0, except the follow-up boost, which gets :data:`BOOST_LOGIT`.
    """
    LogisticRegression = _logistic()
    rows = [e for e in examples if e.condition == "answerable" and e.labels.any()]
    if not rows:
        raise TrainError("no answerable question has its answer among the candidates; nothing to learn from")
    x = np.concatenate([e.x for e in rows]).astype(np.float64)
    y = np.concatenate([e.labels for e in rows])
    if use is None:
        verified = x[:, FEATURES.index("verified")].any()
        use = LEARNED + (("verifier", "verified") if verified else ())
    cols = np.array([FEATURES.index(f) for f in use])
    mean = np.zeros(len(FEATURES))
    scale = np.ones(len(FEATURES))
    mean[cols] = x[:, cols].mean(axis=0)
    sd = x[:, cols].std(axis=0)
    scale[cols] = np.where(sd < 1e-6, 1.0, sd)
    model = LogisticRegression(C=1.0, max_iter=5000)
    model.fit((x[:, cols] - mean[cols]) / scale[cols], y)
    weights = np.zeros(len(FEATURES))
    weights[cols] = np.where(sd < 1e-6, 0.0, model.coef_[0])
    weights[FEATURES.index("boost")] = BOOST_LOGIT
    return mean, scale, weights, float(model.intercept_[0])


def fit_calibrator(inputs: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    """Platt scaling over named inputs (:data:`qa.rank.CALIBRATION_INPUTS`): a logistic regression for P(top answers).

    The inputs are standardised for the fit and the weights mapped back, so the file holds raw-input weights.
    """
    LogisticRegression = _logistic()
    if len(set(labels.tolist())) < 2:
        raise TrainError("calibration needs both right and wrong top answers; give more questions")
    mean, sd = inputs.mean(axis=0), inputs.std(axis=0)
    constant = sd < 1e-9
    sd = np.where(constant, 1.0, sd)
    model = LogisticRegression(C=100.0, max_iter=5000)
    model.fit((inputs - mean) / sd, labels)
    weights = np.where(constant, 0.0, model.coef_[0] / sd)
    return (*(float(v) for v in weights), float(model.intercept_[0] - float(np.dot(weights, mean))))


def ranker_from(mean: np.ndarray, scale: np.ndarray, weights: np.ndarray, bias: float) -> Ranker:
    return Ranker(
        features=FEATURES,
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=weights.astype(np.float32),
        bias=bias,
        calibrator=(1.0, 0.0, 0.0),
        threshold=0.0,
        depth=DEPTH,
    )


@dataclass(frozen=True)
class Scored:
    """A held-out example under a ranker: its top candidate, whether it is a hit, and the calibrator's inputs."""

    example: Example
    order: np.ndarray  # candidate positions, best first
    inputs: np.ndarray  # calibration_inputs

    @property
    def hit(self) -> bool:
        return bool(len(self.order)) and bool(self.example.labels[self.order[0]])

    def hit_at(self, k: int) -> bool:
        return bool(self.example.labels[self.order[:k]].any())


def score_examples(
    ranker: Ranker, examples: Sequence[Example], calibration: Sequence[str] = DEFAULT_CALIBRATION_INPUTS
) -> list[Scored]:
    out = []
    for e in examples:
        s = ranker.score(e.x) if len(e.ids) else np.zeros(0)
        order = np.argsort(-s, kind="stable")
        out.append(Scored(e, order, calibration_inputs(s, e.x, calibration)))
    return out


def fit_full(
    examples: Sequence[Example],
    fold_of: dict[str, int],
    calibration: Sequence[str] = DEFAULT_CALIBRATION_INPUTS,
    verify_margin: float | None = VERIFY_MARGIN,
    extra: Sequence[Example] = (),
    abstain_quantile: float | None = None,
) -> tuple[Ranker, list[Scored]]:
    """Ranker on all ``examples``; calibrator and threshold on held-out (cross-fitted) scores.

    ``verify_margin``: recorded for answering, as the examples were verified (:func:`collect_cached`).
    ``abstain_quantile``: the share of held-out answerable questions the threshold is fit to put under it
    (None: :data:`ABSTAIN_QUANTILE`).
    ``extra``: examples from other corpora (:func:`collect_small`) that the calibrator and threshold are
    fit on too, scored by the same held-out rankers; the ranker learns from ``examples`` only.

    Returns the fitted ranker and the cross-fitted held-out scores it was calibrated on.
    """
    folds = sorted(set(fold_of.values()))
    held: list[Scored] = []
    for k in folds:
        train = [e for e in examples if fold_of[e.question.article] != k]
        test = [e for e in examples if fold_of[e.question.article] == k]
        if not test or not train:
            continue
        test += [e for e in extra if fold_of[e.question.article] == k]
        held.extend(score_examples(ranker_from(*fit_ranker(train)), test, calibration))
    if not held:  # one fold: calibrate in-sample
        held = score_examples(ranker_from(*fit_ranker(examples)), [*examples, *extra], calibration)
    calibrator = fit_calibrator(np.array([h.inputs for h in held]), np.array([h.hit for h in held]))
    ranker = ranker_from(*fit_ranker(examples))
    platt = dataclasses.replace(ranker, calibrator=calibrator, threshold=0.0, calibration=tuple(calibration))
    conf = np.array([platt.probability(h.inputs) for h in held])
    answerable = np.array([h.example.condition == "answerable" for h in held])
    quantile = ABSTAIN_QUANTILE if abstain_quantile is None else abstain_quantile
    threshold = float(np.quantile(conf[answerable], quantile)) if answerable.any() else 0.5
    pre_weights, pre_bias = fit_pre(examples) if ranker.uses_verifier else (None, 0.0)
    ranker = dataclasses.replace(
        ranker,
        calibrator=calibrator,
        threshold=threshold,
        pre_weights=pre_weights,
        pre_bias=pre_bias,
        calibration=tuple(calibration),
        verify_margin=verify_margin if pre_weights is not None else None,
    )
    return ranker, held


def train(
    squad: str | os.PathLike[str],
    *,
    folds: int = 5,
    work: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    limit_articles: int | None = None,
    limit_questions: int | None = None,
    command: str | None = None,
    verifier: str | os.PathLike[str] | None = None,
    calibration: Sequence[str] | None = None,
    verify_margin: float | None = VERIFY_MARGIN,
    corpus_from: str | os.PathLike[str] | None = None,
    one_article: bool = False,
    abstain_quantile: float | None = None,
) -> tuple[Ranker, dict[str, Any]]:
    """Fit ranker + calibrator + threshold on a SQuAD file and write the JSON (if ``out``).

    ``limit_articles`` / ``limit_questions`` (per article) make a small, quick run for tests.
    """
    data, engine, questions = open_squad(squad, work, limit_articles=limit_articles, limit_questions=limit_questions,
                                         corpus_from=corpus_from)  # fmt: skip
    fold_of = folds_of(data, folds)
    examples = collect_cached(data, engine, questions, work=_work(work), verifier=verifier, folds=folds,
                              verify_margin=verify_margin)  # fmt: skip
    extra: list[Example] = []
    if one_article:
        if verifier is None:
            raise TrainError("--one-article needs --verifier (the reader the one-article corpora are read with)")
        extra = collect_small(data, questions, examples, work=_work(work), verifier=verifier, folds=folds,
                              verify_margin=verify_margin)  # fmt: skip
    quantile = ABSTAIN_QUANTILE if abstain_quantile is None else abstain_quantile
    ranker, held = fit_full(examples, fold_of, calibration or DEFAULT_CALIBRATION_INPUTS, verify_margin, extra,
                            quantile)  # fmt: skip
    meta = {
        "data": Path(squad).name,
        "data_sha256": data.sha256,
        "articles": len(data.articles),
        "questions": len(questions),
        "folds": folds,
        "depth": DEPTH,
        "command": command or "qa train " + " ".join(sys.argv[1:]),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
        "calibration_examples": len(held),
        "abstain_quantile": quantile,
        "calibration_corpora": "all articles as one corpus" + (", and each article alone" if one_article else ""),
        "verifier": Path(verifier).name if verifier is not None else None,
    }
    if fold_verifiers(data, verifier) is not None:
        # Fit on cross-fitted scores; answering uses the verifier trained on every article.
        from qa.verify import DEFAULT_VERIFIER

        meta["verifier"] = DEFAULT_VERIFIER.name
        made = "bench/train_verifier.py --folds N --holdout F, qa/models/verifier.md"
        meta["verifier_features"] = f"cross-fitted: {Path(verifier).name} ({made})"  # type: ignore[arg-type]
    ranker = dataclasses.replace(ranker, meta=meta)
    if out is not None:
        ranker.save(out)
    return ranker, meta


SMALL_OFF_TOPIC = 20  # questions of other articles (same fold) asked of each one-article corpus


def collect_small(
    data: SquadData,
    questions: Sequence[SquadQuestion],
    base: Sequence[Example],
    *,
    work: Path,
    verifier: str | os.PathLike[str],
    folds: int = 5,
    verify_margin: float | None = VERIFY_MARGIN,
) -> list[Example]:
    """Each article as a corpus of its own: its questions as is and answer-dropped, and
    :data:`SMALL_OFF_TOPIC` questions of other articles of its fold (off-corpus), read by ``verifier``.

    A one-article corpus (the size of a single news story) gives the first stage's features other
    values than a 24-article one; the calibrator is fit on both sizes so one threshold holds on each.
    The cascade's first rankers come from ``base`` (the all-articles examples), fold by fold.
    Kept in ``work`` as ``.npz`` like :func:`collect_cached`.
    """
    from qa.build import build_index
    from qa.squad import write_corpus

    fold_of = folds_of(data, folds)
    key = hashlib.sha256(json.dumps([data.sha256, [q.id for q in questions], list(FEATURES), DEPTH,
                                     sha256_file(verifier), folds, verify_margin, SMALL_OFF_TOPIC],
                                    default=str).encode()).hexdigest()[:16]  # fmt: skip
    cache = work / f"examples-small-{key}.npz"
    if (cached := _load_examples(cache, questions)) is not None:
        return cached
    rows_for = cascade_rows(base, fold_of, VERIFY_TOP, verify_margin)
    model = load_verifier(verifier)
    out: list[Example] = []
    docs = {a.doc for a in data.articles}
    for n, article in enumerate(data.articles, 1):
        folder = work / "small" / Path(article.doc).stem
        corpus = write_corpus(data, folder / "corpus", skip=frozenset(docs - {article.doc}))
        build_index(corpus, folder / "index")
        engine = Engine(folder / "index", corpus)
        engine.ranker = None
        own = [q for q in questions if q.article == article.doc and q.answerable]
        others = [q for q in questions if q.article != article.doc and fold_of[q.article] == fold_of[article.doc]]
        others = others[:: max(1, len(others) // SMALL_OFF_TOPIC)][:SMALL_OFF_TOPIC]
        asked = collect(data, engine, questions=own, conditions=("answerable", "dropped"))
        asked += collect(data, engine, questions=others, conditions=("answerable",))
        asked = [e if e.question.article == article.doc else dataclasses.replace(e, condition="off_corpus")
                 for e in asked]  # fmt: skip
        out += verify_examples(asked, engine, lambda _q: model, rows_for)
        log.info("one-article corpora: %d/%d", n, len(data.articles))
    _save_examples(cache, out)
    return out


def fold_verifiers(data: SquadData, verifier: str | os.PathLike[str] | None) -> dict[str, str] | None:
    """Article -> verifier file when ``verifier`` is a per-fold template such as ``/tmp/v{fold}-int8.onnx``.

    The files for folds 0, 1, ... (as many as exist, at least 2) were each trained
    without the articles whose index in file order is their fold modulo their
    number (``bench/train_verifier.py --folds N --holdout F``), so every question
    is scored by a verifier that never saw its article. None for a single file.
    """
    if verifier is None or "{fold}" not in str(verifier):
        return None
    template = str(verifier)
    n = 0
    while Path(template.format(fold=n)).is_file():
        n += 1
    if n < 2:
        raise TrainError(f"a per-fold verifier template needs at least 2 files; found {n} for {template!r}")
    return {a: template.format(fold=f) for a, f in folds_of(data, n).items()}


def open_squad(
    squad: str | os.PathLike[str],
    work: str | os.PathLike[str] | None = None,
    *,
    limit_articles: int | None = None,
    limit_questions: int | None = None,
    corpus_from: str | os.PathLike[str] | None = None,
) -> tuple[SquadData, Engine, list[SquadQuestion]]:
    """A SQuAD file's data, an engine on its one-corpus index (built in ``work`` if needed) and its questions.

    The engine has no ranker (the first stage: what the learned ranker's
    features are collected from); ``limit_questions`` is per article.
    """
    data, corpus, index = prepare(squad, _work(work), limit_articles=limit_articles, corpus_from=corpus_from)
    engine = Engine(index, corpus)
    engine.ranker = None
    return data, engine, _questions(data, limit_questions)


def _questions(data: SquadData, per_article: int | None) -> list[SquadQuestion]:
    if per_article is None:
        return list(data.questions)
    taken: dict[str, int] = {}
    chosen = []
    for q in data.questions:
        if taken.get(q.article, 0) < per_article:
            taken[q.article] = taken.get(q.article, 0) + 1
            chosen.append(q)
    return chosen


def _work(work: str | os.PathLike[str] | None) -> Path:
    if work is not None:
        return Path(work)
    import tempfile

    return Path(tempfile.gettempdir()) / "qa-squad-work"


def _progress(n: int, total: int) -> None:
    if n % 500 == 0 or n == total:
        log.info("asked %d/%d questions (3 ways each)", n, total)


def _examples_key(data: SquadData, engine: Engine, questions: Sequence[SquadQuestion], *extra: Any) -> str:
    retriever = engine.retriever()
    return hashlib.sha256(json.dumps([
        data.sha256, retriever.data.manifest.version, list(FEATURES), DEPTH,
        [q.id for q in questions], retriever.settings.__dict__, engine.settings.__dict__, *extra,
    ], default=str).encode()).hexdigest()[:16]  # fmt: skip


def _load_examples(cache: Path, questions: Sequence[SquadQuestion]) -> list[Example] | None:
    if not cache.exists():
        return None
    by_id = {q.id: q for q in questions}
    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("qids", "conditions", "bounds", "ids", "x", "labels", "seconds")}
        bounds = arrays["bounds"]
        out = []
        rows = zip(arrays["qids"].tolist(), arrays["conditions"].tolist(), strict=True)
        for j, (qid, cond) in enumerate(rows):
            a, b = int(bounds[j]), int(bounds[j + 1])
            out.append(Example(by_id[qid], cond, arrays["ids"][a:b], arrays["x"][a:b], arrays["labels"][a:b],
                               float(arrays["seconds"][j])))  # fmt: skip
        log.info("reused the candidates in %s", cache)
        return out
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring the unreadable cache %s: %s", cache, exc)
        return None


def _save_examples(cache: Path, examples: Sequence[Example]) -> None:
    bounds = np.cumsum([0] + [len(e.ids) for e in examples])
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(
        tmp, qids=np.array([e.question.id for e in examples]), conditions=np.array([e.condition for e in examples]),
        bounds=bounds, ids=np.concatenate([e.ids for e in examples]), x=np.concatenate([e.x for e in examples]),
        labels=np.concatenate([e.labels for e in examples]), seconds=np.array([e.seconds for e in examples]),
    )  # fmt: skip
    tmp.replace(cache)


def fit_pre(examples: Sequence[Example]) -> tuple[np.ndarray, float]:
    """The cascade's first ranker: :func:`fit_ranker` without the verifier, as raw-feature weights and bias."""
    mean, scale, weights, bias = fit_ranker(examples, use=LEARNED)
    raw = weights / scale
    return raw.astype(np.float32), float(bias - float(np.dot(raw, mean)))


def cascade_rows(
    base: Sequence[Example], fold_of: dict[str, int], top: int = VERIFY_TOP, margin: float | None = VERIFY_MARGIN
) -> Callable[[Example], np.ndarray]:
    """The candidates the verifier reads for each example, picked as answering picks them
    (:meth:`qa.rank.Ranker.verify_rows`) by the cascade's first ranker (:func:`fit_pre`) fit without
    the example's fold's articles: its ``top`` best, less those ``margin`` logits behind its best."""
    pres = {}
    for k in sorted(set(fold_of.values())):
        rest = [e for e in base if fold_of[e.question.article] != k]
        pres[k] = fit_pre(rest if any(e.labels.any() for e in rest) else base)

    def rows_for(e: Example) -> np.ndarray:
        w, b = pres[fold_of[e.question.article]]
        return select_verified(e.x, top, margin, w, b)

    return rows_for


def verify_examples(
    examples: Sequence[Example],
    engine: Engine,
    verifier_for: Callable[[SquadQuestion], Verifier],
    rows_for: Callable[[Example], np.ndarray],
) -> list[Example]:
    """``examples`` with the verifier's logits for the candidates at positions ``rows_for(example)``."""
    retriever = engine.retriever()
    out = []
    for n, e in enumerate(examples, 1):
        rows = rows_for(e)
        x = add_verification(e.x, e.ids, e.question.question, retriever.data.sentences, verifier_for(e.question),
                             rows, retriever.context)  # fmt: skip
        out.append(Example(e.question, e.condition, e.ids, x, e.labels, e.seconds))
        if n % 1500 == 0 or n == len(examples):
            log.info("verified %d/%d questions' candidates", n, len(examples))
    return out


def collect_cached(
    data: SquadData,
    engine: Engine,
    questions: Sequence[SquadQuestion],
    *,
    work: Path,
    verifier: str | os.PathLike[str] | None = None,
    folds: int = 5,
    verify_margin: float | None = VERIFY_MARGIN,
) -> list[Example]:
    """:func:`collect`, kept in ``work`` as ``.npz`` (no pickle) keyed by data, index, features and questions.

    With a ``verifier``, the candidates are collected first without it; then,
    for each question, a first ranker fit on the other ``folds``' articles
    (:func:`fit_pre`, as answering's cascade) picks the candidates the verifier
    reads (:func:`cascade_rows`, ``verify_margin`` as answering), and the
    verifier is the one that never saw the question's article when ``verifier``
    is a per-fold template (:func:`fold_verifiers`). Training after an
    evaluation on the same data reuses the candidates instead of asking again.
    """
    base_cache = work / f"examples-{_examples_key(data, engine, questions, None)}.npz"
    base = _load_examples(base_cache, questions)
    if base is None:
        base = collect(data, engine, questions=questions, progress=_progress)
        _save_examples(base_cache, base)
    if verifier is None:
        return base
    per_article = fold_verifiers(data, verifier)
    paths = sorted(set(per_article.values())) if per_article else [str(verifier)]
    if missing := [p for p in paths if not Path(p).is_file()]:
        raise TrainError(f"no verifier file {missing[0]}")
    # Keyed by the files' content, not their paths: a verifier retrained in place is scored again.
    scorers = [sha256_file(p) for p in paths]
    margin = () if verify_margin is None else (verify_margin,)  # files verified before margins keep their key
    key = _examples_key(data, engine, questions, scorers, "cascade", folds, VERIFY_TOP, *margin)
    cache = work / f"examples-{key}.npz"
    verified = _load_examples(cache, questions)
    if verified is not None:
        return verified
    rows_for = cascade_rows(base, folds_of(data, folds), VERIFY_TOP, verify_margin)
    models = {path: load_verifier(path) for path in paths}

    def verifier_for(q: SquadQuestion) -> Verifier:
        return models[per_article[q.article] if per_article else paths[0]]

    verified = verify_examples(base, engine, verifier_for, rows_for)
    _save_examples(cache, verified)
    return verified
