"""Compare verifiers on the SQuAD articles a fold verifier never saw, through the whole cascade.

    .venv/bin/python bench/verifier_ab.py --baseline '/tmp/vfold2/v{fold}-int8.onnx' \
        --held-out /tmp/vfold2/v0.json /tmp/vctx0/verifier-int8.onnx [MORE.onnx ...]

``--baseline`` is the per-fold template ``qa eval --squad --verifier`` takes; its
verified candidates come from the example cache in ``--work`` (made by that
command, or made now). ``--held-out`` is a fold verifier's ``verifier.json``:
its ``held_out_articles`` are the articles compared. Each candidate verifier
(trained with ``bench/train_verifier.py --folds 2 --holdout F``, so it never saw
those articles either) reads the same five candidates the cascade's first
ranker picks (``--top N``: its N best; ``--verify-margin``: less those that
ranker puts that many logits behind its best, as answering does; default
``qa.rank.VERIFY_MARGIN``, ``all`` reads all N). For each verifier, on those
articles' questions: the verifier's own top-1 among the candidates it read,
and the learned ranker and calibrator
refit on its scores, cross-validated by article within those articles (the
``qa eval --squad`` folds): top-1 (abstentions count as misses), top-3, and
abstention on answerable, answer-dropped and off-corpus questions.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qa import train as tr
from qa.eval import cross_validate, learned_summary
from qa.rank import load_verifier, parse_verify_margin
from qa.squad import folds_of

DEFAULT = "../shared/data/squad-tune/squad-v1.1-dev-tune.json.gz"
SHOWN = ("questions", "top1", "top1_ranking", "top3", "abstained_answerable", "abstained_dropped",
         "abstained_off_corpus")  # fmt: skip


def summary(examples: Sequence[tr.Example], fold_of: dict[str, int], margin: float | None) -> dict[str, Any]:
    v = tr.FEATURES.index("verifier")
    own = [
        bool(e.labels[int(np.argmax(np.where(e.x[:, v + 1] > 0, e.x[:, v], -np.inf)))])
        for e in examples
        if e.condition == "answerable" and len(e.ids)
    ]
    cv, _, _ = cross_validate(examples, fold_of, tr.DEFAULT_CALIBRATION_INPUTS, margin)
    m = learned_summary(cv.held, cv.confs, cv.thresholds)
    return {**{k: m.get(k) for k in SHOWN}, "verifier_own_top1": round(float(np.mean(own)), 4) if own else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("candidates", nargs="+", type=Path, help="verifier .onnx files (verifier.json beside each)")
    ap.add_argument("--baseline", required=True, help="per-fold template, e.g. '/tmp/vfold2/v{fold}-int8.onnx'")
    ap.add_argument("--held-out", required=True, type=Path, help="a fold verifier's verifier.json")
    ap.add_argument("--squad", default=DEFAULT)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qa-squad-work"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--top", type=int, default=tr.VERIFY_TOP, help="candidates each verifier reads (the baseline: 5)")
    ap.add_argument("--verify-margin", type=parse_verify_margin, default=tr.VERIFY_MARGIN,
                    help="logits behind the first ranker's best, or 'all'")  # fmt: skip
    args = ap.parse_args()
    margin = args.verify_margin
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    data, engine, questions = tr.open_squad(args.squad, args.work)
    fold_of = folds_of(data, args.folds)
    base = tr.collect_cached(data, engine, questions, work=args.work, folds=args.folds)
    baseline = tr.collect_cached(data, engine, questions, work=args.work, verifier=args.baseline, folds=args.folds,
                                 verify_margin=margin)  # fmt: skip
    held = set(json.loads(args.held_out.read_text(encoding="utf-8"))["held_out_articles"])
    rows_for = tr.cascade_rows(base, fold_of, args.top, margin)  # as collect_cached picks the baseline's candidates

    results = {
        "baseline " + args.baseline: summary([e for e in baseline if e.question.article in held], fold_of, margin)
    }
    mine = [e for e in base if e.question.article in held]
    for path in args.candidates:
        verifier = load_verifier(path)
        verified = tr.verify_examples(mine, engine, lambda q, v=verifier: v, rows_for)
        shown = "all" if margin is None else margin
        name = f"{path} (context: {verifier.reads_context}, top {args.top}, margin {shown})"
        results[name] = summary(verified, fold_of, margin)
    print(json.dumps({"articles": sorted(held), "results": results}, indent=2))


if __name__ == "__main__":
    main()
