"""Ranking alone: the shipped logistic regression against gradient-boosted trees, same features, same folds.

    .venv/bin/python bench/ranker_models.py [--work /tmp/squad-work3] [--verifier '/tmp/vfold2/v{fold}-int8.onnx']

Reads the candidates ``qa eval --squad --verifier`` cached in ``--work`` (made
now if missing), fits each model on 4 folds' articles (answerable questions
whose answer is among the candidates, as ``qa train``) and prints the top-1
of the held-out fold's answerable questions by ranking alone (no abstention),
per fold and weighted over the folds. Needs scikit-learn (``.[train]``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qa import train as tr
from qa.answer import Engine
from qa.rank import FEATURES
from qa.squad import folds_of, prepare

DEFAULT = "../shared/data/squad-tune/squad-v1.1-dev-tune.json.gz"


def models() -> dict[str, Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    def logistic(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        mean, sd = x.mean(0), x.std(0)
        sd[sd < 1e-6] = 1.0
        model = LogisticRegression(C=1.0, max_iter=5000).fit((x - mean) / sd, y)
        return lambda z: model.decision_function((z - mean) / sd)

    def trees(**settings: float) -> Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]:
        def fit(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
            return HistGradientBoostingClassifier(random_state=0, **settings).fit(x, y).decision_function  # type: ignore[arg-type]

        return fit

    return {
        "logistic regression (shipped)": logistic,
        "trees: 200 x 15 leaves, lr 0.05": trees(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                 min_samples_leaf=50, l2_regularization=1.0),
        "trees: 400 x 31 leaves, lr 0.03": trees(max_iter=400, learning_rate=0.03, max_leaf_nodes=31,
                                                 min_samples_leaf=100),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--squad", default=DEFAULT)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qa-squad-work"))
    ap.add_argument("--verifier", default=None, help="per-fold template, as qa eval --squad --verifier")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data, corpus, index = prepare(args.squad, args.work)
    engine = Engine(index, corpus)
    engine.ranker = None
    examples = tr.collect_cached(data, engine, tr._questions(data, None), work=args.work, verifier=args.verifier,
                                 folds=args.folds)  # fmt: skip
    fold_of = folds_of(data, args.folds)
    use = tr.LEARNED + (("verifier", "verified") if args.verifier else ())
    cols = np.array([FEATURES.index(f) for f in use])
    answerable = [e for e in examples if e.condition == "answerable" and len(e.ids)]
    hits: dict[str, list[bool]] = {name: [] for name in models()}
    for k in sorted(set(fold_of.values())):
        train = [e for e in answerable if fold_of[e.question.article] != k and e.labels.any()]
        test = [e for e in answerable if fold_of[e.question.article] == k]
        x = np.concatenate([e.x[:, cols] for e in train]).astype(np.float64)
        y = np.concatenate([e.labels for e in train])
        line = []
        for name, fit in models().items():
            score = fit(x, y)
            got = [bool(e.labels[int(np.argmax(score(e.x[:, cols].astype(np.float64))))]) for e in test]
            hits[name] += got
            line.append(f"{np.mean(got):.4f}")
        print(f"fold {k} ({len(test)} questions): " + "  ".join(line), flush=True)
    for name, got in hits.items():
        print(f"{name:36s} top-1 by ranking {np.mean(got):.4f} ({len(got)} questions)")


if __name__ == "__main__":
    main()
