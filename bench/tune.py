"""Grid-search retrieval settings on question files; prints one line per setting.

    .venv/bin/python bench/tune.py INDEX QUESTIONS.jsonl [MORE.jsonl ...]

Ranking quality (top-1, top-3, follow-ups) is measured with abstention off;
then the confidence of the best answer is printed for answerable and
unanswerable questions, which is what the abstention threshold is set from.
"""

from __future__ import annotations

import argparse
import itertools

from qa.answer import AnswerSettings, Engine
from qa.eval import evaluate, load_cases
from qa.retrieve import RetrievalSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", help="a built index folder")
    parser.add_argument("questions", nargs="+", help="question files (JSONL, as qa eval reads)")
    args = parser.parse_args()
    cases = [c for f in args.questions for c in load_cases(f)]
    engine = Engine(args.index)
    engine.ranker = None  # this tunes the first stage: hand-set fusion and cosine confidence
    retriever = engine.retriever()
    # Every setting asks the same questions: embed each once.
    retriever.embed = lambda q, reuse=False: retriever.encoder.encode_query(q, reuse=True)  # type: ignore[method-assign]
    grid = {
        "fusion": ["score", "rrf"],
        "window_weight": [0.6, 0.7, 0.8],
        "bm25_weight": [0.4, 0.6, 0.8, 1.0],
        "centrality_penalty": [0.3, 0.4, 0.5, 0.6],
        "answer_type_boost": [0.0, 0.03, 0.06],
    }
    results = []
    for values in itertools.product(*grid.values()):
        if values[0] == "rrf" and values[2] != grid["bm25_weight"][0]:
            continue  # rrf has no BM25 weight
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

    # Abstention: with the shipped settings, where do the confidences of
    # answerable and unanswerable questions fall? The threshold goes midway
    # between the highest unanswerable and the lowest answerable one.
    retriever.settings = RetrievalSettings()
    engine.settings = AnswerSettings(abstain_below=-1.0)
    outcomes = evaluate(cases, engine).outcomes
    yes = sorted(o.answer.confidence for o in outcomes if o.case.gold is not None)
    no = sorted(o.answer.confidence for o in outcomes if o.case.gold is None)
    p5, median = yes[len(yes) // 20], yes[len(yes) // 2]
    print(f"confidence, answerable ({len(yes)}): min {yes[0]:.3f}  p5 {p5:.3f}  median {median:.3f}")
    if not no:
        print(f"no unanswerable questions: no midpoint threshold; shipped {AnswerSettings().abstain_below}")
        return
    print(f"confidence, unanswerable ({len(no)}): max {no[-1]:.3f}  median {no[len(no) // 2]:.3f}")
    print(f"midpoint threshold {(no[-1] + yes[0]) / 2:.3f}; shipped {AnswerSettings().abstain_below}")


if __name__ == "__main__":
    main()
