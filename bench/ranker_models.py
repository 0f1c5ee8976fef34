"""Ranking alone: the shipped logistic regression against gradient-boosted trees, same features, same folds.

    .venv/bin/python bench/ranker_models.py [--work /tmp/squad-work3] [--verifier '/tmp/vfold2/v{fold}-int8.onnx']

Reads the candidates ``qa eval --squad --verifier`` cached in ``--work`` (made
now if missing), fits each model on 4 folds' articles (answerable questions
whose answer is among the candidates, as ``qa train``) and prints the top-1
of the held-out fold's answerable questions by ranking alone (no abstention),
per fold and weighted over the folds. Needs scikit-learn (``.[train]``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import squad_cv  # bench/ is this script's folder, so first on sys.path

from qa import train as tr
from qa.rank import FEATURES
from qa.squad import folds_of


def trees() -> dict[str, Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    def fitter(**settings: float) -> Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]:
        def fit(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
            return HistGradientBoostingClassifier(random_state=0, **settings).fit(x, y).decision_function  # type: ignore[arg-type]

        return fit

    return {
        "trees: 200 x 15 leaves, lr 0.05": fitter(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                  min_samples_leaf=50, l2_regularization=1.0),
        "trees: 400 x 31 leaves, lr 0.03": fitter(max_iter=400, learning_rate=0.03, max_leaf_nodes=31,
                                                  min_samples_leaf=100),
    }  # fmt: skip


def main() -> None:
    args = squad_cv.parser(__doc__.split("\n")[0]).parse_args()
    data, _, _, examples = squad_cv.load(args)
    fold_of = folds_of(data, args.folds)
    use = tr.LEARNED + (("verifier", "verified") if args.verifier else ())
    cols = np.array([FEATURES.index(f) for f in use])
    answerable = [e for e in examples if e.condition == "answerable" and len(e.ids)]
    shipped = "logistic regression (shipped)"
    hits: dict[str, list[bool]] = {name: [] for name in (shipped, *trees())}
    for k in sorted(set(fold_of.values())):
        train = [e for e in answerable if fold_of[e.question.article] != k and e.labels.any()]
        test = [e for e in answerable if fold_of[e.question.article] == k]
        mean, scale, weights, bias = tr.fit_ranker(train, use)  # as qa train fits it
        x = np.concatenate([e.x[:, cols] for e in train]).astype(np.float64)
        y = np.concatenate([e.labels for e in train])
        fitted = {name: fit(x, y) for name, fit in trees().items()}
        got: dict[str, list[bool]] = {name: [] for name in hits}
        for e in test:
            z = e.x.astype(np.float64)
            got[shipped].append(bool(e.labels[int(np.argmax(((z - mean) / scale) @ weights + bias))]))
            for name, score in fitted.items():
                got[name].append(bool(e.labels[int(np.argmax(score(z[:, cols])))]))
        for name, g in got.items():
            hits[name] += g
        line = [f"{np.mean(g):.4f}" for g in got.values()]
        print(f"fold {k} ({len(test)} questions): " + "  ".join(line), flush=True)
    for name, h in hits.items():
        print(f"{name:36s} top-1 by ranking {np.mean(h):.4f} ({len(h)} questions)")


if __name__ == "__main__":
    main()
