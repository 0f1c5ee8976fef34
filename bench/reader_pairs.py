"""Reader training pairs from a SQuAD-format file: (question, sentence, context, label, answer span).

    .venv/bin/python bench/reader_pairs.py OUT.jsonl.gz [--squad FILE] [--limit-questions N] [--chats 3000]

Articles are split into sentences exactly as the index splits them
(``qa.corpus.split_document``). For each question whose gold answer lies
inside one citable sentence (questions whose answer crosses a sentence
boundary, or whose answer text occurs in more than one sentence, are left
out: no single sentence is the answer), one line per pair:

- ``label`` 1 (``kind`` "gold"): the answer sentence, with ``span``, the
  answer's ``[start, end)`` inside the sentence;
- ``label`` 0: up to two other sentences of the answer's paragraph
  ("paragraph"), the first-stage's top two sentences outside that paragraph
  ("retrieved") and its top sentence from another article ("other"). The
  first stage here is the product's: the int8 document encoder's cosine and
  BM25 over every sentence of the file, fused by reciprocal rank.

``--mine READER`` adds, for each question, the ``--mine-top`` sentences
(default 2) that reader (an ONNX file, such as the shipped
``qa/models/reader-int8.onnx``) scores highest among the first stage's
candidates and the answer's paragraph, the answer sentence left out
("mined"): the sentences it would cite were the answer gone. A sentence
holding one of the question's answer texts is never taken, nor one already
a negative of the question. Reading costs a few milliseconds a pair: use it
with ``--limit-questions``.

``--chats N`` adds rule-made follow-up chats (``qa.squad.follow_up_chats``),
asked as ``PREVIOUS [SEP] FOLLOW-UP``, as answer() reads a follow-up.
``context`` is the title and the previous sentence of the passage
(``qa.verify.context_of``), what the reader sees at answer time. The data is
read from ``../shared``; write OUT outside the repository.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qa.corpus import document_title, split_document
from qa.reader import OnnxReader, load_reader
from qa.squad import GoldMap, SquadQuestion, follow_up_chats, load_squad
from qa.types import Document, Sentence
from qa.verify import context_of

log = logging.getLogger("reader_pairs")
DEFAULT = "../shared/data/squad-train/squad-v1.1-train.json.gz"
FUSED = 12  # first-stage candidates per question, as the product's shortlist


def split_articles(data) -> tuple[list[Sentence], dict[str, str]]:  # type: ignore[no-untyped-def]
    sentences: list[Sentence] = []
    titles: dict[str, str] = {}
    for a in data.articles:
        doc = Document(a.doc, a.text, "")
        passages, found = split_document(doc)
        titles[a.doc] = document_title(doc, passages)
        sentences.extend(found)
    return sentences, titles


def first_stage(questions: list[str], sentences: list[Sentence], k: int) -> np.ndarray:
    """Top ``k`` sentence ids per question: dense cosine and BM25 fused by reciprocal rank (60)."""
    import bm25s
    import faiss
    import Stemmer

    from qa.embed import default_model, get_encoder

    texts = [s.text for s in sentences]
    enc = get_encoder(default_model())
    t = time.monotonic()
    key = hashlib.sha256(json.dumps([texts, questions]).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"reader-pairs-{key}.npy"  # a rerun after a failure skips the embedding
    if cache.is_file():
        both = np.load(cache)
    else:
        both = np.concatenate([enc.encode(texts, documents=True), enc.encode(questions, documents=True)])
        np.save(cache, both)
    doc_vecs, q_vecs = both[: len(texts)], both[len(texts) :]
    log.info("embedded %d sentences and %d questions in %.0f s", len(texts), len(questions), time.monotonic() - t)
    index = faiss.IndexFlatIP(doc_vecs.shape[1])
    index.add(doc_vecs)
    _, dense = index.search(q_vecs, 4 * k)
    stemmer = Stemmer.Stemmer("english")
    bm = bm25s.BM25()
    bm.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    sparse = []
    for tokens in bm25s.tokenize(questions, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False):
        if not tokens:  # only stop words
            sparse.append(np.zeros(0, dtype=np.int64))
            continue
        scores = bm.get_scores(tokens)
        hit = np.flatnonzero(scores)  # most sentences score 0: rank only the others (bm25s' own top-k is slow on ties)
        best = hit[np.argsort(-scores[hit], kind="stable")[: 4 * k]] if len(hit) else hit
        sparse.append(best)
    out = np.zeros((len(questions), k), dtype=np.int64)
    for n in range(len(questions)):
        score: dict[int, float] = {}
        for ranking in (dense[n], sparse[n]):
            for r, i in enumerate(ranking):
                score[int(i)] = score.get(int(i), 0.0) + 1.0 / (60 + r)
        out[n] = sorted(score, key=lambda i: -score[i])[:k]
    return out


def mined(
    reader: OnnxReader, question: str, answers: Sequence[str], candidates: list[int], taken: set[int],
    sentences: list[Sentence], titles: dict[str, str], top: int,
) -> list[int]:  # fmt: skip
    """The ``top`` candidates ``reader`` scores highest, leaving out ``taken`` and any holding an answer text."""
    texts = [a.lower() for a in answers if a.strip()]
    pool = [
        j for j in dict.fromkeys(candidates)  # in order, once each
        if j not in taken and sentences[j].citable and not any(t in sentences[j].text.lower() for t in texts)
    ]  # fmt: skip
    if not pool:
        return []
    contexts = [context_of(sentences, j, titles[sentences[j].doc]) for j in pool]
    logits = reader.scores(question, [sentences[j].text for j in pool], contexts)
    return [pool[k] for k in np.argsort(-logits, kind="stable")[:top]]


def answer_sentence(gold: GoldMap, q: SquadQuestion) -> tuple[int, tuple[int, int]] | None:
    """The one sentence holding the answer and the span inside it, or None when that is not one sentence."""
    covering = gold.covering(q)
    if len(covering) != 1 or gold.overlapping(q) != covering:
        return None
    i = next(iter(covering))
    s = gold.sentences[i]
    a, b = next((a, b) for a, b in q.spans if s.start <= a and b <= s.end)
    return i, (a - s.start, b - s.start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--squad", default=DEFAULT)
    ap.add_argument("--limit-questions", type=int, help="only the first N questions (tiny runs)")
    ap.add_argument("--chats", type=int, default=3000, help="rule-made follow-up chats to add (0: none)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--mine", type=Path, help="a reader (ONNX) whose highest-scored wrong sentences become negatives")
    ap.add_argument("--mine-top", type=int, default=2, help="mined negatives per question (default 2)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    data = load_squad(args.squad)
    sentences, titles = split_articles(data)
    gold = GoldMap(sentences)
    questions = [q for q in data.questions if q.answerable][: args.limit_questions]
    chats = follow_up_chats(data, limit=args.chats) if args.chats else []
    asked = [q.question for q in questions] + [f"{c.turns[-2]} [SEP] {c.turns[-1]}" for c in chats]
    targets = questions + [c.question for c in chats]
    log.info("%d sentences, %d questions, %d chats", len(sentences), len(questions), len(chats))
    top = first_stage(asked, sentences, FUSED)
    rng = random.Random(args.seed)
    reader = load_reader(args.mine) if args.mine else None
    rows = skipped = 0
    started = time.monotonic()
    with gzip.open(args.out, "wt", encoding="utf-8") as out:

        def emit(question: str, i: int, label: int, kind: str, span: tuple[int, int] | None = None) -> None:
            nonlocal rows
            s = sentences[i]
            row = {"question": question, "sentence": s.text, "context": context_of(sentences, i, titles[s.doc]),
                   "label": label, "kind": kind, "article": s.doc}  # fmt: skip
            if span is not None:
                row["span"] = list(span)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            rows += 1

        for n, (question, q) in enumerate(zip(asked, targets, strict=True)):
            found = answer_sentence(gold, q)
            if found is None:
                skipped += 1
                continue
            i, span = found
            prefix = "chat-" if n >= len(questions) else ""
            emit(question, i, 1, prefix + "gold", span)
            paragraph = sorted(gold.paragraph(q) - {i})
            picked = rng.sample(paragraph, min(2, len(paragraph)))
            for j in picked:
                emit(question, j, 0, prefix + "paragraph")
            outside = [int(j) for j in top[n] if sentences[j].citable and j not in gold.paragraph(q) and j != i]
            for j in outside[:2]:
                emit(question, j, 0, prefix + "retrieved")
            other = next((j for j in outside if sentences[j].doc != q.article), None)
            if other is not None and other not in outside[:2]:
                emit(question, other, 0, prefix + "other")
            if reader is not None:
                taken = {i, *picked, *outside[:2], *([other] if other is not None else [])}
                for j in mined(
                    reader, question, q.answers, outside + paragraph, taken, sentences, titles, args.mine_top
                ):
                    emit(question, j, 0, prefix + "mined")
                if (n + 1) % 500 == 0:
                    log.info("mined %d of %d questions (%.0f s)", n + 1, len(asked), time.monotonic() - started)
    log.info("%d pairs from %d questions and chats (%d left out: answer not in exactly one sentence) -> %s",
             rows, len(asked) - skipped, skipped, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
