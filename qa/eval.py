"""Measure answer quality: ``qa eval`` on question files and on BEIR data sets.

Question files are JSONL: ``{"id", "question", "gold"}`` (``gold`` a list of
phrases, or null when the sources don't answer) and conversations
``{"id", "turns", "gold"}`` where ``gold`` applies to the last turn.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import string
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa import progress
from qa.answer import Engine
from qa.rank import VERIFY_MARGIN, Ranker, Verifier, load_verifier
from qa.reader import OnnxReader
from qa.squad import GoldMap, SquadChat, SquadQuestion, folds_of, follow_up_chats
from qa.types import Answer, QAError

log = logging.getLogger(__name__)

MAX_HIT_CHARS = 400  # a "source" longer than this is not a sentence and never counts


class EvalError(QAError):
    """The evaluation file or data set is missing or malformed."""


def collapse(text: str) -> str:
    return " ".join(text.split())


def is_hit(text: str, gold: Iterable[str]) -> bool:
    """A source hits when it is sentence-sized and contains a gold phrase (whitespace collapsed)."""
    if len(text) > MAX_HIT_CHARS:
        return False
    flat = collapse(text)
    return any(collapse(g) in flat for g in gold)


@dataclass(frozen=True)
class Case:
    id: str
    turns: list[str]  # one question, or a conversation's questions in order
    gold: list[str] | None


@dataclass
class Outcome:
    case: Case
    answer: Answer
    seconds: float

    @property
    def top1(self) -> bool:
        return (
            bool(self.case.gold)
            and bool(self.answer.sources)
            and is_hit(self.answer.sources[0].text, self.case.gold or [])
        )

    @property
    def correct(self) -> bool:
        """Right source on top and not abstained; or abstained when the sources don't answer."""
        return self.answer.abstained if self.case.gold is None else self.top1 and not self.answer.abstained

    @property
    def top3(self) -> bool:
        return bool(self.case.gold) and any(is_hit(s.text, self.case.gold or []) for s in self.answer.sources[:3])


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def _select(self, chats: bool, answerable: bool | None = None) -> list[Outcome]:
        return [
            o
            for o in self.outcomes
            if (len(o.case.turns) > 1) == chats and (answerable is None or (o.case.gold is not None) == answerable)
        ]

    def summary(self) -> dict[str, Any]:
        answerable = self._select(False, True)
        unanswerable = self._select(False, False)
        chats = self._select(True)
        abstained = [o for o in self._select(False) if o.answer.abstained]
        latencies = np.array([o.seconds for o in self.outcomes]) * 1000
        return {
            "answerable": len(answerable),
            "top1": sum(o.top1 for o in answerable),
            "top3": sum(o.top3 for o in answerable),
            "unanswerable": len(unanswerable),
            "abstained_unanswerable": sum(o.answer.abstained for o in unanswerable),
            "abstained_answerable": sum(o.answer.abstained for o in answerable),
            "abstention_precision": _ratio(sum(o.case.gold is None for o in abstained), len(abstained)),
            "abstention_recall": _ratio(sum(o.answer.abstained for o in unanswerable), len(unanswerable)),
            "follow_ups": len(chats),
            "follow_up_correct": sum(o.correct for o in chats),
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2) if len(latencies) else None,
            "latency_ms_p95": round(float(np.percentile(latencies, 95)), 2) if len(latencies) else None,
            "misses": [
                {
                    "id": o.case.id,
                    "question": o.case.turns[-1],
                    "history": o.case.turns[:-1],
                    "gold": o.case.gold,
                    "abstained": o.answer.abstained,
                    "confidence": o.answer.confidence,
                    "returned": o.answer.sources[0].text if o.answer.sources else None,
                }
                for o in self.outcomes
                if not o.correct
            ],
        }


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, punctuation and the articles a/an/the dropped, spaces collapsed.

    >>> normalize_answer("The  Eiffel Tower!")
    'eiffel tower'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer (SQuAD's EM), else 0.0."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def f1_score(prediction: str, golds: Iterable[str]) -> float:
    """SQuAD's F1: the best token-overlap F1 of the normalised prediction against any gold answer.

    >>> f1_score("in 1933", ["1933"])
    0.6666666666666666
    """
    p = normalize_answer(prediction).split()
    best = 0.0
    for g in golds:
        t = normalize_answer(g).split()
        common = Counter(p) & Counter(t)
        same = sum(common.values())
        if not p or not t:
            best = max(best, float(p == t))
        elif same:
            precision, recall = same / len(p), same / len(t)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def phrase_scores(predictions: Sequence[str | None], golds: Sequence[Sequence[str]]) -> dict[str, float | None]:
    """Mean EM and F1 over questions; a None prediction (an abstention) scores 0 on an answerable question
    and 1 on an unanswerable one (no gold answers), as SQuAD v2.0 counts."""
    if not predictions:
        return {"exact_match": None, "f1": None}
    em = f1 = 0.0
    for p, g in zip(predictions, golds, strict=True):
        if not g:
            em += float(p is None)
            f1 += float(p is None)
        elif p is not None:
            em += exact_match(p, g)
            f1 += f1_score(p, g)
    return {"exact_match": round(em / len(predictions), 4), "f1": round(f1 / len(predictions), 4)}


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def load_cases(path: str | os.PathLike[str]) -> list[Case]:
    """The cases of a question file; cases marked ``"review"`` (rated wrong, no gold yet) are left out."""
    cases = []
    review = 0
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalError(f"cannot read {path}: {exc.strerror}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if isinstance(row, dict) and row.get("review"):
                review += 1
                continue
            turns = row["turns"] if "turns" in row else [row["question"]]
            gold = row["gold"]
            cases.append(Case(str(row.get("id", n)), list(turns), None if gold is None else list(gold)))
        except (ValueError, KeyError, TypeError) as exc:
            raise EvalError(f"{path} line {n} is not a question or conversation: {exc}") from exc
    if review:
        log.warning("%s: %d cases are marked for review (no gold yet) and are left out", path, review)
    return cases


def evaluate(cases: list[Case], engine: Engine) -> Report:
    """Answer every case (conversations turn by turn) and collect the outcomes."""
    engine.retriever()  # load before timing
    report = Report()
    with progress.Bar(len(cases), "answering", "question") as answering:
        for case in cases:
            for i, turn in enumerate(case.turns):
                started = time.perf_counter()
                result = engine.answer(turn, history=case.turns[:i])
                seconds = time.perf_counter() - started
            report.outcomes.append(Outcome(case, result, seconds))
            answering.update()
    return report


# --- BEIR ---------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        return [json.loads(line) for line in f if line.strip()]


def load_beir(folder: str | os.PathLike[str], split: str = "test"):  # type: ignore[no-untyped-def]
    """(corpus {id: (title, text)}, queries {id: text}, qrels {qid: {docid: rel}}) of a BEIR folder."""
    folder = Path(folder)
    corpus_file = next((folder / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (folder / n).exists()), None)
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if corpus_file is None or not (folder / "queries.jsonl").exists() or not qrels_file.exists():
        raise EvalError(f"{folder} is not a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/{split}.tsv)")
    corpus = {d["_id"]: (d.get("title", ""), d.get("text", "")) for d in _read_jsonl(corpus_file)}
    qrels: dict[str, dict[str, int]] = {}
    for line in qrels_file.read_text(encoding="utf-8").splitlines()[1:]:
        qid, did, score = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(score)
    queries = {q["_id"]: q["text"] for q in _read_jsonl(folder / "queries.jsonl") if q["_id"] in qrels}
    return corpus, queries, qrels


def retrieval_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10, recall@10 and recall@100 averaged over queries, by pytrec_eval (trec_eval's code)."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"})
    per_query = evaluator.evaluate(run)
    n = len(qrels)  # queries with no results count as zero
    return {
        "ndcg@10": round(sum(q["ndcg_cut_10"] for q in per_query.values()) / n, 5),
        "recall@10": round(sum(q["recall_10"] for q in per_query.values()) / n, 5),
        "recall@100": round(sum(q["recall_100"] for q in per_query.values()) / n, 5),
    }


def dense_run(
    q_vectors: np.ndarray, doc_vectors: np.ndarray, qids: list[str], ids: list[str], depth: int = 100
) -> dict[str, dict[str, float]]:
    """Each query's ``depth`` best documents by cosine (rows are unit vectors), as ``retrieval_metrics`` reads."""
    scores = q_vectors @ doc_vectors.T
    tops = np.argsort(-scores, axis=1)[:, :depth]
    return {qid: {ids[j]: float(scores[row, j]) for j in tops[row]} for row, qid in enumerate(qids)}


def evaluate_beir(folder: str | os.PathLike[str], *, work: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Whole-document retrieval on a BEIR data set: dense-only and the shipped retriever.

    Dense-only follows the published protocol (``title + " " + text`` per
    document, cosine; documents by the int8 document model, as a build embeds
    them, queries by the fp32 one). The shipped retriever indexes each document as a file
    (title line, then text) and ranks documents by their best sentence.
    ``work`` keeps the built index between runs.
    """
    from qa.build import build_index
    from qa.embed import default_model, get_encoder

    corpus, queries, qrels = load_beir(folder)
    encoder = get_encoder(default_model())
    ids = list(corpus)
    work_dir = Path(work) if work else Path(tempfile.mkdtemp(prefix="qa-beir-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    cached = work_dir / f"dense-documents-{encoder.export_id}.npy"  # another export embeds them again
    if cached.exists() and len(np.load(cached, mmap_mode="r", allow_pickle=False)) == len(ids):
        doc_vectors = np.load(cached, allow_pickle=False)
    else:
        log.info("dense-only: embedding %d documents", len(ids))
        # By the document model, as a build embeds them; the queries below by the question model.
        texts = [f"{t} {x}".strip() for t, x in (corpus[i] for i in ids)]
        doc_vectors = encoder.encode(texts, documents=True)
        np.save(cached, doc_vectors, allow_pickle=False)
    qids = list(queries)
    q_vectors = encoder.encode([queries[q] for q in qids])
    results: dict[str, Any] = {"dense": retrieval_metrics(dense_run(q_vectors, doc_vectors, qids, ids), qrels)}

    docs_dir = work_dir / "corpus"
    if not docs_dir.exists():
        tmp = work_dir / "corpus.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for i in ids:
            title, text = corpus[i]
            (tmp / f"{i}.txt").write_text(f"{title}\n\n{text}\n" if title else f"{text}\n", encoding="utf-8")
        tmp.rename(docs_dir)
    build_index(docs_dir, work_dir / "index")
    engine = Engine(work_dir / "index", docs_dir)
    retriever = engine.retriever()
    shipped_run = {}
    for qid in qids:
        shipped_run[qid] = retriever.rank_documents(queries[qid], 100)
    results["shipped"] = retrieval_metrics(
        {q: {d.removesuffix(".txt"): s for d, s in r.items()} for q, r in shipped_run.items()}, qrels
    )
    results["queries"] = len(qids)
    results["documents"] = len(ids)
    return results


# --- SQuAD ------------------------------------------------------------------------


def reliability(confidence: Iterable[float], correct: Iterable[bool], bins: int = 10) -> list[dict[str, Any]]:
    """Reliability table: per equal-width confidence bin, its count, mean confidence and accuracy.

    >>> reliability([0.05, 0.95, 0.9], [False, True, False], bins=2)[1]
    {'low': 0.5, 'high': 1.0, 'n': 2, 'confidence': 0.925, 'accuracy': 0.5}
    """
    conf = np.asarray(list(confidence), dtype=np.float64)
    ok = np.asarray(list(correct), dtype=np.float64)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        table.append({
            "low": round(b / bins, 4),
            "high": round((b + 1) / bins, 4),
            "n": n,
            "confidence": round(float(conf[m].mean()), 4) if n else None,
            "accuracy": round(float(ok[m].mean()), 4) if n else None,
        })  # fmt: skip
    return table


def expected_calibration_error(confidence: Iterable[float], correct: Iterable[bool], bins: int = 10) -> float:
    """ECE: the count-weighted mean of |accuracy - mean confidence| over equal-width bins.

    >>> expected_calibration_error([0.05, 0.95, 0.9], [False, True, False], bins=2)
    0.3
    """
    conf = np.asarray(list(confidence), dtype=np.float64)
    ok = np.asarray(list(correct), dtype=np.float64)
    if len(conf) == 0:
        return 0.0
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(ok[m].mean() - conf[m].mean())
    return round(float(total / len(conf)), 4)


def tradeoff(confidence: Iterable[float], hit: Iterable[bool], answerable: Iterable[bool],
             thresholds: Iterable[float]) -> list[dict[str, Any]]:  # fmt: skip
    """Precision / recall of answering at each threshold (answer when confidence >= threshold).

    precision = right answers / answers given; recall = right answers / answerable questions;
    ``abstained_answerable`` = share of answerable questions abstained on.
    """
    conf = np.asarray(list(confidence), dtype=np.float64)
    ok = np.asarray(list(hit), dtype=bool)
    yes = np.asarray(list(answerable), dtype=bool)
    rows = []
    for t in thresholds:
        answered = conf >= t
        right = answered & ok
        rows.append({
            "threshold": round(float(t), 4),
            "precision": _ratio(int(right.sum()), int(answered.sum())),
            "recall": _ratio(int(right.sum()), int(yes.sum())),
            "abstained_answerable": _ratio(int((~answered & yes).sum()), int(yes.sum())),
            "abstained_unanswerable": _ratio(int((~answered & ~yes).sum()), int((~yes).sum())),
        })  # fmt: skip
    return rows


def _method_summary(
    conditions: list[str], hits: list[bool], hits3: list[bool], conf: list[float], threshold: float,
    seconds: list[float],
) -> dict[str, Any]:  # fmt: skip
    c = np.array(conditions)
    h = np.array(hits, dtype=bool)
    h3 = np.array(hits3, dtype=bool)
    p = np.array(conf, dtype=np.float64)
    abstain = p < threshold
    ans = c == "answerable"
    out: dict[str, Any] = {
        "questions": int(ans.sum()),
        "threshold": round(threshold, 4),
        "top1": _ratio(int((h & ~abstain & ans).sum()), int(ans.sum())),
        "top1_ranking": _ratio(int((h & ans).sum()), int(ans.sum())),
        "top3": _ratio(int((h3 & ans).sum()), int(ans.sum())),
        "abstained_answerable": _ratio(int((abstain & ans).sum()), int(ans.sum())),
    }
    for cond in ("dropped", "off_corpus", "unanswerable"):
        m = c == cond
        if m.any():
            out[f"abstained_{cond}"] = _ratio(int((abstain & m).sum()), int(m.sum()))
    correct = h & (c == "answerable")  # the top source answers (never true when the answer is gone)
    out["ece"] = expected_calibration_error(p, correct)
    out["reliability"] = reliability(p, correct)
    out["tradeoff"] = tradeoff(p, correct, ans, sorted({0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, round(threshold, 3)}))
    ms = np.array(seconds)[ans] * 1000
    out["first_stage_ms_p50"] = round(float(np.percentile(ms, 50)), 2) if len(ms) else None
    out["first_stage_ms_p95"] = round(float(np.percentile(ms, 95)), 2) if len(ms) else None
    return out


@dataclass
class HeldOut:
    """Cross-validated examples: each scored by the ranker and calibrator of the folds that never saw it."""

    held: list[Any] = field(default_factory=list)  # qa.train.Scored
    confs: list[float] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)

    def add(self, ranker: Ranker, scored: Sequence[Any]) -> None:
        for s in scored:
            self.held.append(s)
            self.confs.append(ranker.probability(s.inputs))
            self.thresholds.append(ranker.threshold)


def cross_validate(
    examples: Sequence[Any],
    fold_of: dict[str, int],
    inputs: Sequence[str],
    verify_margin: float | None = VERIFY_MARGIN,
    extra: Sequence[Any] = (),
    abstain_quantile: float | None = None,
) -> tuple[HeldOut, HeldOut, dict[int, Any]]:
    """Fold by fold: ranker and calibrator fit on the other folds' articles (``qa.train.fit_full``), scored on this one.

    Returns the held-out examples, the held-out ``extra`` examples (other corpora, :func:`qa.train.collect_small`,
    which the calibrators are fit on too) and each fold's ranker (``verify_margin``: the one the examples were
    verified with, for the rankers to answer with).
    """
    from qa import train as tr

    main, other = HeldOut(), HeldOut()
    rankers: dict[int, Any] = {}
    articles = {e.question.article for e in examples}
    for k in sorted(set(fold_of.values())):
        train_ex = [e for e in examples if fold_of[e.question.article] != k]
        test = [e for e in examples if fold_of[e.question.article] == k]
        if not test or not train_ex:
            continue
        inner = {a: f for a, f in fold_of.items() if f != k and a in articles}
        train_extra = [e for e in extra if fold_of[e.question.article] != k]
        ranker, _ = tr.fit_full(train_ex, inner, inputs, verify_margin, train_extra, abstain_quantile)
        rankers[k] = ranker
        main.add(ranker, tr.score_examples(ranker, test, ranker.calibration))
        test_extra = [e for e in extra if fold_of[e.question.article] == k]
        other.add(ranker, tr.score_examples(ranker, test_extra, ranker.calibration))
    return main, other, rankers


def calibrated_summary(h: HeldOut) -> dict[str, Any]:
    """:func:`learned_summary`, with calibration (ECE, reliability) and trade-off on the probabilities themselves."""
    out = learned_summary(h.held, h.confs, h.thresholds)
    correct = [s.hit and s.example.condition == "answerable" for s in h.held]
    answerable = [s.example.condition == "answerable" for s in h.held]
    out["ece"] = expected_calibration_error(h.confs, correct)
    out["reliability"] = reliability(h.confs, correct)
    mean_t = float(np.mean(h.thresholds))
    out["threshold"] = round(mean_t, 4)
    out["tradeoff"] = tradeoff(h.confs, correct, answerable,
                               sorted({0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, round(mean_t, 3)}))  # fmt: skip
    return out


def learned_summary(held: Sequence[Any], confs: Sequence[float], thresholds: Sequence[float]) -> dict[str, Any]:
    """:func:`_method_summary` of cross-validated examples, each judged against its own fold's threshold."""
    shifted = [c - t + 0.5 for c, t in zip(confs, thresholds, strict=True)]
    return _method_summary(
        [s.example.condition for s in held], [s.hit for s in held], [s.hit_at(3) for s in held],
        shifted, 0.5, [s.example.seconds for s in held],
    )  # fmt: skip


def phrase_summary(
    engine: Engine, reader: OnnxReader, held: Sequence[Any], confs: Sequence[float], thresholds: Sequence[float]
) -> dict[str, Any]:
    """Phrase EM and F1, end to end: what answering would say for each held-out question asked as is.

    The prediction is the reader's phrase in the top sentence (the whole sentence when no phrase is
    sure enough, :data:`qa.answer.PHRASE_MIN`), or nothing when the answer abstains.
    """
    from qa.answer import PHRASE_MIN

    retriever = engine.retriever()
    sentences = retriever.data.sentences
    predictions: dict[str, list[str | None]] = {"answerable": [], "unanswerable": []}
    golds: dict[str, list[tuple[str, ...]]] = {"answerable": [], "unanswerable": []}
    phrased = 0
    for s, conf, threshold in zip(held, confs, thresholds, strict=True):
        e = s.example
        if e.condition not in predictions:
            continue
        golds[e.condition].append(e.question.answers if e.question.answerable else ())
        if conf < threshold or not len(s.order):
            predictions[e.condition].append(None)
            continue
        i = int(e.ids[s.order[0]])
        reading = reader.read(e.question.question, [sentences[i].text], [retriever.context(i)])[0]
        text = sentences[i].text
        if reading.phrase is not None and reading.phrase_score >= PHRASE_MIN:
            text = text[reading.phrase[0] : reading.phrase[1]]
            phrased += 1
        predictions[e.condition].append(text)
    out: dict[str, Any] = {}
    scores = phrase_scores(predictions["answerable"], golds["answerable"])
    out["phrase_em"], out["phrase_f1"] = scores["exact_match"], scores["f1"]
    out["phrase_given"] = _ratio(phrased, sum(p is not None for v in predictions.values() for p in v))
    if golds["unanswerable"]:
        both = phrase_scores(predictions["answerable"] + predictions["unanswerable"],
                             golds["answerable"] + golds["unanswerable"])  # fmt: skip
        out["v2_em"], out["v2_f1"] = both["exact_match"], both["f1"]
    return out


def squad_hit(answer: Answer, gold: GoldMap, question: SquadQuestion) -> bool:
    """Whether ``answer`` answers: not abstained, its top source a sentence covering a gold span, short enough."""
    top = answer.sources[0] if answer.sources else None
    covering = (gold.sentences[i] for i in gold.covering(question))
    return bool(top and not answer.abstained and len(top.text) <= MAX_HIT_CHARS
                and any(s.doc == top.doc and s.start == top.start for s in covering))  # fmt: skip


def chats_by_fold(
    engine: Engine,
    chats: Sequence[SquadChat],
    rankers: Mapping[int, Ranker],
    fold_of: Mapping[str, int],
    per_article: Mapping[str, str] | None,
) -> Iterator[SquadChat]:
    """Each chat, with ``engine`` set to the ranker of its article's fold and the verifier that never saw it.

    Each verifier file is loaded once.
    """
    loaded: dict[str, Verifier] = {}
    for chat in chats:
        engine.ranker = rankers.get(fold_of[chat.question.article])
        if per_article:
            path = per_article[chat.question.article]
            if path not in loaded:
                loaded[path] = load_verifier(path)
            engine.verifier = loaded[path]
        yield chat


def evaluate_squad(
    path: str | os.PathLike[str],
    *,
    folds: int = 5,
    work: str | os.PathLike[str] | None = None,
    chats: bool = False,
    limit_articles: int | None = None,
    limit_questions: int | None = None,
    latency_questions: int = 200,
    verifier: str | os.PathLike[str] | None = None,
    calibration: Sequence[str] | None = None,
    verify_margin: float | None = VERIFY_MARGIN,
    corpus_from: str | os.PathLike[str] | None = None,
    one_article: bool = False,
    abstain_quantile: float | None = None,
) -> dict[str, Any]:
    """Cross-validated answer quality on SQuAD-format data, all articles indexed as one corpus.

    Today's method (hand-set fusion, cosine confidence, threshold 0.40) and the
    learned ranker + calibrator, fit fold by fold on the other folds' articles
    and measured on the held-out fold's questions: top-1 (an abstention is a
    miss), top-3, abstention on answer-dropped and off-corpus questions (the
    article's sentences excluded from the candidates), false abstentions,
    calibration (reliability table, ECE) and latency. With ``one_article`` (and a
    ``verifier``), each article is also its own corpus (``qa.train.collect_small``): the
    calibrators are fit on both sizes and the one-article results are reported apart.
    """
    from qa import train as tr
    from qa.answer import AnswerSettings

    data, engine, questions = tr.open_squad(path, work, limit_articles=limit_articles, limit_questions=limit_questions,
                                            corpus_from=corpus_from)  # fmt: skip
    inputs = tuple(calibration or tr.DEFAULT_CALIBRATION_INPUTS)  # the calibrator's
    per_article = tr.fold_verifiers(data, verifier)
    if verifier is not None:
        engine.verifier = load_verifier(sorted(per_article.values())[0] if per_article else verifier)
    fold_of = folds_of(data, folds)
    examples = tr.collect_cached(data, engine, questions, work=tr._work(work), verifier=verifier, folds=folds,
                                 verify_margin=verify_margin)  # fmt: skip
    result: dict[str, Any] = {"articles": len(data.articles), "questions": len(questions), "folds": folds,
                              "data_sha256": data.sha256}  # fmt: skip
    if verifier is not None:
        result["verify_margin"] = verify_margin

    baseline_threshold = AnswerSettings().abstain_below
    result["today"] = _method_summary(
        [e.condition for e in examples],
        [bool(len(e.ids)) and bool(e.labels[0]) for e in examples],
        [bool(e.labels[:3].any()) for e in examples],
        [e.baseline_confidence for e in examples],
        baseline_threshold,
        [e.seconds for e in examples],
    )
    extra: list[Any] = []
    if one_article and verifier is not None:
        extra = tr.collect_small(data, questions, examples, work=tr._work(work), verifier=verifier, folds=folds,
                                 verify_margin=verify_margin)  # fmt: skip
    main, other, rankers = cross_validate(examples, fold_of, inputs, verify_margin, extra, abstain_quantile)
    if main.held:
        learned = calibrated_summary(main)
        learned["fold_thresholds"] = [round(r.threshold, 4) for r in rankers.values()]
        reader = engine.verifier
        if isinstance(reader, OnnxReader):
            learned.update(phrase_summary(engine, reader, main.held, main.confs, main.thresholds))
        result["learned"] = learned
    if other.held:
        result["learned_one_article"] = calibrated_summary(other)
    if chats:
        chat_set = follow_up_chats(data)
        gold = GoldMap(engine.retriever().data.sentences)
        for name in ("today", "learned"):
            if name == "learned" and not rankers:
                break
            fold_chats = (
                chats_by_fold(engine, chat_set, rankers, fold_of, per_article) if name == "learned" else chat_set
            )
            right = sum(
                squad_hit(engine.answer(chat.turns[-1], history=list(chat.turns[:-1])), gold, chat.question)
                for chat in fold_chats
            )
            engine.ranker = None
            if name in result:
                result[name]["chats"] = len(chat_set)
                result[name]["chats_right"] = right
    # Latency of the whole answer() with a ranker fit on every fold, warm, one question at a time.
    if rankers and latency_questions:
        full, _ = tr.fit_full(examples, fold_of, inputs, verify_margin)
        engine.ranker = full
        sample = [q.question for q in questions[:: max(1, len(questions) // latency_questions)]][:latency_questions]
        engine.answer(sample[0])
        times = []
        for q in sample:
            started = time.perf_counter()
            engine.answer(q)
            times.append((time.perf_counter() - started) * 1000)
        result["learned"]["answer_ms_p50"] = round(float(np.percentile(times, 50)), 2)
        result["learned"]["answer_ms_p95"] = round(float(np.percentile(times, 95)), 2)
    return result
