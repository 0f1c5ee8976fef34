"""Answer-phrase decoding variants, on the sentence that answers: phrase EM and F1 given the right sentence.

    .venv/bin/python bench/phrase_decoding.py READER.onnx [--questions 1500] [--work /tmp/sq/w] [VARIANT ...]

Each of QUESTIONS random answerable squad-tune questions is read with the
sentence of the 24-article corpus that holds its answer (and that sentence's
context, as ``answer()`` reads it); the phrase is decoded from the same
start and end logits in each way:

- ``base``: ``qa.reader.best_span`` (start × end probability, at most 30 tokens), as shipped;
- ``qpenX``: start and end logits of tokens of words the question holds lowered by X
  (SQuAD's answers rarely repeat the question);
- ``lenX``: X subtracted from the span's log probability per token of length.

Scores use SQuAD's normalisation (``qa.eval``). The sentence is given, so this
measures the span head alone, not the retrieval before it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import train  # noqa: E402
from qa.eval import exact_match, f1_score  # noqa: E402
from qa.reader import OnnxReader, best_span, trim  # noqa: E402
from qa.squad import GoldMap  # noqa: E402
from qa.verify import context_of  # noqa: E402

TUNE = ROOT.parent / "shared" / "data" / "squad-tune" / "squad-v1.1-dev-tune.json.gz"
STOP = frozenset(
    re.findall(r"\w+", "the a an of in on at to for by and or is was were are be been what which who whom whose "
               "when where why how did do does many much")
)  # fmt: skip


def lowered_for_question_words(text: str, question: str, offsets, allowed, start, end, by: float):  # type: ignore[no-untyped-def]
    words = {w for w in re.findall(r"\w+", question.lower())} - STOP
    start, end = start.copy(), end.copy()
    for k, (a, b) in enumerate(offsets):
        if not allowed[k]:
            continue
        while a > 0 and text[a - 1].isalnum():
            a -= 1
        while b < len(text) and text[b].isalnum():
            b += 1
        if text[a:b].lower() in words:
            start[k] -= by
            end[k] -= by
    return start, end


def decode(variant: str, question: str, text: str, start, end, offsets, allowed) -> str:  # type: ignore[no-untyped-def]
    if variant.startswith("qpen"):
        start, end = lowered_for_question_words(text, question, offsets, allowed, start, end, float(variant[4:]))
    found = best_span(start, end, offsets, allowed, float(variant[3:]) if variant.startswith("len") else 0.0)
    if found is None:
        return text
    a, b = trim(text, *found[0])
    return text[a:b] if a < b else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reader", type=Path)
    parser.add_argument("variants", nargs="*", default=["base", "qpen1", "qpen2", "len0.1", "len0.2"])
    parser.add_argument("--questions", type=int, default=1500)
    parser.add_argument("--squad", type=Path, default=TUNE)
    parser.add_argument(
        "--work", type=Path, help="the SQuAD index folder of qa eval --squad (default: a temporary one)"
    )
    args = parser.parse_intermixed_args()

    _, engine, questions = train.open_squad(args.squad, args.work)
    retriever = engine.retriever()
    sentences, documents = retriever.data.sentences, retriever.data.documents
    gold = GoldMap(sentences)
    answerable = [q for q in questions if q.answerable]
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(answerable), min(args.questions, len(answerable)), replace=False))
    reader = OnnxReader(args.reader)
    rows = []
    for q in (answerable[i] for i in chosen):
        covering = sorted(gold.covering(q))
        if not covering:
            continue
        s = sentences[covering[0]]
        context = context_of(sentences, covering[0], documents[s.doc].title if s.doc in documents else "")
        rows.append((q, s.text, *reader.span_logits(q.question, s.text, context)))
    print(f"{len(rows)} questions, each read with the sentence that answers it")
    for variant in args.variants:
        predictions = [decode(variant, q.question, text, st, en, off, ok) for q, text, st, en, off, ok in rows]
        em = np.mean([exact_match(p, r[0].answers) for p, r in zip(predictions, rows, strict=True)])
        f1 = np.mean([f1_score(p, r[0].answers) for p, r in zip(predictions, rows, strict=True)])
        print(f"{variant:8} EM {em:.4f}  F1 {f1:.4f}", flush=True)


if __name__ == "__main__":
    main()
