"""Grid-search retrieval settings on question files; prints one line per setting.

    .venv/bin/python bench/tune.py INDEX QUESTIONS.jsonl [MORE.jsonl ...]

Ranking quality (top-1, top-3, follow-ups) is measured with abstention off;
then the confidence of the best answer is printed for answerable and
unanswerable questions, which is what the abstention threshold is set from.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys

from qa.answer import AnswerSettings, Engine
from qa.eval import evaluate, load_cases
from qa.retrieve import RetrievalSettings


def main() -> None:
    index, files = sys.argv[1], sys.argv[2:]
    cases = [c for f in files for c in load_cases(f)]
    engine = Engine(index)
    retriever = engine.retriever()
    grid = {
        "window_weight": [0.0, 0.5, 0.6, 0.7, 0.8, 1.0],
        "bm25_weight": [0.0, 0.2, 0.3, 0.4, 0.5],
        "bm25_scale": [5.0, 10.0, 20.0],
        "centrality_penalty": [0.0, 0.3, 0.4, 0.5, 0.6],
    }
    results = []
    for values in itertools.product(*grid.values()):
        retriever.settings = RetrievalSettings(**dict(zip(grid, values, strict=True)))
        engine.settings = AnswerSettings(abstain_below=-1.0)
        report = evaluate(cases, engine)
        s = report.summary()
        chats = [o for o in report.outcomes if len(o.case.turns) > 1 and o.case.gold]
        results.append((s["top1"], s["top3"], sum(o.top1 for o in chats), values))
    results.sort(key=lambda r: (r[0] + r[2], r[1]), reverse=True)
    print("top1 top3 follow-ups  " + " ".join(grid))
    for top1, top3, fu, values in results[:25]:
        print(f"{top1:4} {top3:4} {fu:4}        {values}")


if __name__ == "__main__":
    main()
