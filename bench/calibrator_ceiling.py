"""How far other calibrators get with the reader's scores: abstention at the shipped 3.5% budget, by model.

    .venv/bin/python bench/calibrator_ceiling.py READER.onnx [--squad FILE] [--corpus-from FILE] [--work /tmp/sq/w]

Reads the candidates ``qa eval --squad FILE --work WORK --verifier READER``
collected and cached in WORK (collected here where missing, as ``qa eval``
collects them: about 15 minutes for squad-tune). For each question under each condition (answerable; answer-dropped;
off-corpus; with a SQuAD v2.0 file, unanswerable) the candidate the reader
scores highest is the answer, and a calibrator predicts whether it holds the
answer. Calibrators are fit on four folds of articles and scored on the
fifth (``qa.squad.folds_of``), and the threshold is the 3.5% quantile of the
held-out answerable questions' scores, as ``qa train`` sets it:

- ``reader``: logistic regression (``qa.train.fit_calibrator``, as shipped) on the reader's logit, its lead over the
  second and the best cosine of any candidate (the shipped calibrator's
  core, without the first-stage ranker);
- ``+names``: the same and how many of the question's names and numbers the
  sentence, its previous sentence and its document's title lack;
- ``all``: logistic regression on the inputs of ``+names``, every ranker
  feature of the answer (``qa.rank.FEATURES``), the reader's second and third
  logits, how many candidates it read and the best BM25 of any;
- ``trees``: gradient-boosted trees on the same as ``all``.

Printed: how many of the reader's choices lack a name of the question, by
condition, and how many hold a gold answer text (an answer-dropped question's
article may state its answer twice); then per calibrator top-1 (an abstention
is a miss) and the share of each condition abstained, and of the
answer-dropped questions whose choice holds no answer text. The answer is the reader's choice and the
threshold is fit on the one corpus alone, so ``reader`` is the baseline to
compare with, not ``qa eval``'s figures. Where no calibrator gains on one
condition without losing on another, the limit is how well the reader's
logit tells answering sentences from the rest, not the calibrator.
Questions with no candidate at all are left out (counted in the first line).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import train  # noqa: E402
from qa.eval import normalize_answer  # noqa: E402
from qa.rank import FEATURES  # noqa: E402
from qa.squad import folds_of  # noqa: E402
from qa.train import ABSTAIN_QUANTILE  # noqa: E402

TUNE = ROOT.parent / "shared" / "data" / "squad-tune" / "squad-v1.1-dev-tune.json.gz"
# A name: a capitalised word past the question's first, or a number; question words and the like are not.
# It is missing when no word of the sentence, its previous sentence or its document's title is that word.
_WORD = re.compile(r"\d[\d,.]*\d|\d|[^\W\d_][\w-]*")  # a number (1,500 or 3.5) or a word, apostrophes apart
_NOT_NAMES = frozenset(
    re.findall(
        r"\w+",
        "What Who Whom Whose When Where Which Why How In On At The A An Of For To By During After "
        "Before From As Is Was Are Were Did Do Does I If Besides According Along With Other Than",
    )
)
CONDITIONS = ("answerable", "dropped", "off_corpus", "unanswerable")


def names(question: str) -> list[str]:
    found = []
    for m in _WORD.finditer(question):
        word = m.group(0)
        named = word[0].isupper() and len(word) > 1 and word not in _NOT_NAMES
        if m.start() > 0 and (named or word[0].isdigit()):
            found.append(word.lower())
    return found


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def rows(examples: list[train.Example], sentences: Any) -> list[dict[str, Any]]:
    """Per example: its condition, article, whether the reader's choice holds the answer, and the inputs."""
    v, bm25 = FEATURES.index("verifier"), FEATURES.index("bm25")
    out = []
    for e in examples:
        if not len(e.ids):
            continue
        read = e.x[:, v + 1] > 0
        logits = np.where(read, e.x[:, v], -10.0)
        best = int(np.argmax(logits))
        ranked = np.sort(logits)[::-1]
        second = float(ranked[1]) if len(ranked) > 1 else -10.0
        i = int(e.ids[best])
        s = sentences[i]
        previous = sentences[i - 1].text if i > 0 and sentences[i - 1].doc == s.doc else ""
        seen = words(f"{s.text} {previous} {s.doc.replace('_', ' ')}")
        missing = sum(1 for n in names(e.question.question) if n not in seen)
        reader = [float(ranked[0]), float(ranked[0]) - second, float(e.x[:, 0].max())]
        extra = [second, float(ranked[2]) if len(ranked) > 2 else -10.0, float(read.sum()), float(e.x[:, bm25].max())]
        text = f" {normalize_answer(s.text)} "
        golds = {normalize_answer(a) for a in e.question.answers} - {""}
        out.append({
            "condition": e.condition, "article": e.question.article,
            "hit": e.condition == "answerable" and bool(e.labels[best]),
            "holds": any(f" {g} " in text for g in golds),  # a gold answer text, wherever the sentence is
            "reader": reader, "+names": [*reader, float(missing)],
            "all": [*reader, float(missing), *e.x[best].tolist(), *extra],
        })  # fmt: skip
    return out


def fit_predict(name: str, x: np.ndarray, y: np.ndarray, held: np.ndarray) -> np.ndarray:
    """P(the answer is right) for ``held``, by a calibrator of kind ``name`` fit on ``x``, ``y``."""
    if name == "trees":
        from sklearn.ensemble import HistGradientBoostingClassifier

        trees = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0)
        return np.asarray(trees.fit(x, y).predict_proba(held)[:, 1])
    *weights, bias = train.fit_calibrator(x, y)  # the shipped calibrator's fit (Platt scaling)
    return np.asarray(1.0 / (1.0 + np.exp(-(held @ np.array(weights) + bias))))


def held_out(table: list[dict[str, Any]], inputs: str, name: str, fold_of: dict[str, int]) -> dict[str, float]:
    x = np.array([r[inputs] for r in table], dtype=np.float64)
    y = np.array([r["hit"] for r in table])
    fold = np.array([fold_of[r["article"]] for r in table])
    p = np.zeros(len(table))
    for k in sorted(set(fold.tolist())):
        p[fold == k] = fit_predict(name, x[fold != k], y[fold != k], x[fold == k])
    condition = np.array([r["condition"] for r in table])
    answerable = condition == "answerable"
    threshold = float(np.quantile(p[answerable], ABSTAIN_QUANTILE))
    result = {"top1": float(np.mean(y[answerable] & (p[answerable] >= threshold)))}
    for c in CONDITIONS:
        if (condition == c).any():
            result[c] = float(np.mean(p[condition == c] < threshold))
    without = (condition == "dropped") & ~np.array([r["holds"] for r in table])
    if without.any():  # answer-dropped, the choice holding no answer text either: it should abstain
        result["dropped, choice without an answer text"] = float(np.mean(p[without] < threshold))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reader", type=Path, help="the reader the candidates were scored with (qa eval --verifier)")
    parser.add_argument("--squad", type=Path, default=TUNE, help="SQuAD v1.1 or v2.0 file (default squad-tune)")
    parser.add_argument("--corpus-from", type=Path, help="as qa eval takes it (a v2.0 file against squad-tune)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sq/w"), help="qa eval's --work")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()

    data, engine, questions = train.open_squad(args.squad, args.work, corpus_from=args.corpus_from)
    examples = train.collect_cached(data, engine, questions, work=args.work, verifier=args.reader, folds=args.folds)
    table = rows(examples, engine.retriever().data.sentences)
    fold_of = folds_of(data, args.folds)
    answerable = sum(r["condition"] == "answerable" for r in table)
    print(f"{len(table)} examples, {answerable} answerable ({len(examples) - len(table)} without a candidate)")
    kinds = {"right": lambda r: r["hit"], "wrong": lambda r: r["condition"] == "answerable" and not r["hit"]}
    kinds.update({c: lambda r, c=c: r["condition"] == c for c in CONDITIONS[1:]})
    lacking, holding = [], []
    for kind, chosen in kinds.items():
        picked = [r for r in table if chosen(r)]
        if picked:
            lacking.append(f"{kind} {np.mean([r['+names'][3] > 0 for r in picked]):.3f}")
            holding.append(f"{kind} {np.mean([r['holds'] for r in picked]):.3f}")
    print("the reader's choice lacks a name of the question: " + " ".join(lacking))
    print("the reader's choice holds a gold answer text (SQuAD's normalisation): " + " ".join(holding))
    for inputs, name in (("reader", "logistic"), ("+names", "logistic"), ("all", "logistic"), ("all", "trees")):
        result = held_out(table, inputs, name, fold_of)
        shares = "; ".join(f"{c} {v:.3f}" for c, v in result.items() if c != "top1")
        print(f"{inputs:7} {name:9} top-1 {result['top1']:.4f}  abstained: {shares}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
