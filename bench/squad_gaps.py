"""Where SQuAD answers are lost: ranking ceilings, abstention trade-off and follow-ups against their own question.

    .venv/bin/python bench/squad_gaps.py [--work /tmp/qa-squad-work] [--verifier '/tmp/vfold2/v{fold}-int8.onnx']

Cross-validated by article exactly as ``qa eval --squad --folds N`` (the same
cached candidates in ``--work``, made now if missing; rankers and calibrators
fit fold by fold), then prints as JSON:

- ``ranking``: for answerable questions, the share whose gold sentence is
  the held-out ranker's first, among its first k, or anywhere in the first
  stage's candidates (the ceiling of any re-ranking of them);
- ``abstention``: how many answer-dropped and off-corpus questions abstain
  at thresholds that make 3, 5, 10, 20, 30 and 50% of answerable ones
  abstain, the rank AUC of the confidence between answerable and
  unanswerable questions, and the share of answer-dropped questions whose
  top sentence still holds a gold answer string (the answer stated twice);
- ``chats``: the rule-made follow-up chats answered right with their
  history, against their last question asked alone in its original wording
  (``SquadChat.question``: the title named instead of a pronoun).
"""

from __future__ import annotations

import json
import re

import numpy as np
import squad_cv  # bench/ is this script's folder, so first on sys.path

from qa import train as tr
from qa.eval import chats_by_fold, cross_validate, squad_hit
from qa.squad import GoldMap, folds_of, follow_up_chats

ANSWERABLE_ABSTAINED = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5)


def _words(text: str) -> str:
    return " " + re.sub(r"\W+", " ", text.casefold()).strip() + " "


def rank_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive's score > a negative's), ties counted half."""
    neg = np.sort(negative)
    below = np.searchsorted(neg, positive, side="left")
    ties = np.searchsorted(neg, positive, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (len(positive) * len(neg)))


def main() -> None:
    args = squad_cv.parser(__doc__.split("\n")[0]).parse_args()
    data, engine, _, examples = squad_cv.load(args)
    fold_of = folds_of(data, args.folds)
    cv, _, rankers = cross_validate(examples, fold_of, tuple(tr.DEFAULT_CALIBRATION_INPUTS), args.verify_margin)
    held, confs_list, thresholds = cv.held, cv.confs, cv.thresholds
    confs, cond = np.array(confs_list), np.array([s.example.condition for s in held])
    sentences = engine.retriever().data.sentences
    answerable = [s for s in held if s.example.condition == "answerable"]
    out: dict[str, object] = {"questions": len(answerable), "folds": args.folds, "verifier": args.verifier}
    out["ranking"] = {
        **{f"gold_in_top_{k}": round(float(np.mean([s.hit_at(k) for s in answerable])), 4) for k in (1, 3, 5, 10)},
        "gold_among_candidates": round(float(np.mean([s.example.labels.any() for s in answerable])), 4),
    }
    a, dropped, off = cond == "answerable", cond == "dropped", cond == "off_corpus"
    restated = [
        bool(len(s.order)) and any(
            _words(x).strip() and _words(x) in _words(sentences[int(s.example.ids[s.order[0]])].text)
            for x in s.example.question.answers
        )
        for s in held if s.example.condition == "dropped"
    ]  # fmt: skip
    trade_off = []
    for q in ANSWERABLE_ABSTAINED:
        t = float(np.quantile(confs[a], q))
        trade_off.append({"answerable_abstained": q, "threshold": round(t, 4),
                          "dropped_abstained": round(float(np.mean(confs[dropped] < t)), 4),
                          "off_corpus_abstained": round(float(np.mean(confs[off] < t)), 4)})  # fmt: skip
    fold_threshold = np.array(thresholds)
    out["abstention"] = {
        "at_fold_thresholds": {
            name: round(float(np.mean(confs[m] < fold_threshold[m])), 4)
            for name, m in (("answerable", a), ("dropped", dropped), ("off_corpus", off))
        },
        "trade_off": trade_off,
        "auc_answerable_vs_dropped": round(rank_auc(confs[a], confs[dropped]), 4),
        "auc_answerable_vs_off_corpus": round(rank_auc(confs[a], confs[off]), 4),
        "dropped_top_holds_answer_string": round(float(np.mean(restated)), 4),
    }
    gold = GoldMap(sentences)
    with_history = alone = only_with = only_alone = 0
    chats = follow_up_chats(data)
    for chat in chats_by_fold(engine, chats, rankers, fold_of, tr.fold_verifiers(data, args.verifier)):
        right_with = squad_hit(engine.answer(chat.turns[-1], history=list(chat.turns[:-1])), gold, chat.question)
        right_alone = squad_hit(engine.answer(chat.question.question), gold, chat.question)
        with_history, alone = with_history + right_with, alone + right_alone
        only_with += right_with and not right_alone
        only_alone += right_alone and not right_with
    out["chats"] = {"chats": len(chats), "right_with_history": with_history, "last_question_alone_right": alone,
                    "right_only_with_history": only_with, "right_only_alone": only_alone}  # fmt: skip
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
