"""Verifier training pairs from SQuAD-format data, one JSON object a line.

    .venv/bin/python bench/squad_pairs.py OUT.jsonl [--squad FILE] [--work DIR] [--negatives 10]

Each line: ``{"article", "fold", "question", "sentence", "label", "kind", "context"}``
(``context``: the document's title and the sentence before it in its passage, as
``Retriever.context`` gives it to the verifier at answer time).
``label`` 1: a sentence holding a whole gold answer span (``kind`` "gold");
0: one of the retriever's top candidates that does not ("retrieved", the
first ``--negatives`` of today's ranking) or another sentence of the answer's
paragraph ("paragraph"). ``fold`` is the article's fold (5 folds, round-robin
in file order, as ``qa eval --squad --folds 5`` uses) so training can hold
articles out. Sentences are the indexed, citable sentences exactly as cited.

Follow-up chats (``--chats``) add lines with ``"question": "PREVIOUS [SEP] FOLLOW-UP"``:
the earlier question, " [SEP] ", then the follow-up; ``kind`` is prefixed "chat-".
The data is read from ``../shared`` and the output must not go into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from qa import train as tr
from qa.retrieve import answer_type
from qa.squad import GoldMap, folds_of

DEFAULT = "../shared/data/squad-tune/squad-v1.1-dev-tune.json.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--squad", default=DEFAULT)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qa-squad-work"))
    ap.add_argument("--negatives", type=int, default=10)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--chats", action="store_true", help="also write follow-up chat pairs")
    args = ap.parse_args()

    data, engine, _ = tr.open_squad(args.squad, args.work)  # no ranker: negatives from today's retriever
    retriever = engine.retriever()
    sentences = retriever.data.sentences
    gold = GoldMap(sentences)
    fold = folds_of(data, args.folds)
    rows = skipped = 0
    with args.out.open("w", encoding="utf-8") as out:

        def emit(article: str, question: str, ids: object, label: int, kind: str) -> None:
            nonlocal rows
            for i in ids:  # type: ignore[attr-defined]
                row = {"article": article, "fold": fold[article], "question": question,
                       "sentence": sentences[i].text, "label": label, "kind": kind,
                       "context": retriever.context(i)}  # fmt: skip
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                rows += 1

        for n, q in enumerate(data.questions, 1):
            positives = gold.covering(q)
            if not positives:
                skipped += 1  # the span crosses a sentence boundary: no single sentence answers
                continue
            touched = gold.overlapping(q)
            hits = retriever.search(
                retriever.embed(q.question), retriever.tokens(q.question), args.negatives + len(touched),
                answer_type=answer_type(q.question),
            )  # fmt: skip
            retrieved = [h.sentence for h in hits if h.sentence not in touched][: args.negatives]
            paragraph = sorted(gold.paragraph(q) - touched - set(retrieved))
            emit(q.article, q.question, sorted(positives), 1, "gold")
            emit(q.article, q.question, retrieved, 0, "retrieved")
            emit(q.article, q.question, paragraph, 0, "paragraph")
            if n % 500 == 0:
                print(f"{n}/{len(data.questions)} questions", file=sys.stderr)
        if args.chats:
            from qa.squad import follow_up_chats

            for chat in follow_up_chats(data):
                q = chat.question
                question = f"{chat.turns[-2]} [SEP] {chat.turns[-1]}"
                positives = gold.covering(q)
                touched = gold.overlapping(q)
                # the follow-up resolved with its history, as answer() reads it
                c, fused, _, _ = engine.candidates(retriever, chat.turns[-1], list(chat.turns[:-1]))
                ranked = [int(c.ids[j]) for j in np.argsort(-fused, kind="stable")]
                retrieved = [i for i in ranked if i not in touched][: args.negatives]
                emit(q.article, question, sorted(positives), 1, "chat-gold")
                emit(q.article, question, retrieved, 0, "chat-retrieved")
    print(f"{rows} pairs from {len(data.questions) - skipped} questions "
          f"({skipped} skipped: answer crosses sentences) -> {args.out}", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
