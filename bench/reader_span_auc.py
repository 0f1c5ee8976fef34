"""Do the reader's answer-phrase scores say more than its logit about whether a sentence answers?

    .venv/bin/python bench/reader_span_auc.py [READER] [--questions 350]

SQuAD v2.0 tune questions (answerable and unanswerable, as many of each),
each read against its own paragraph's sentences (split at sentence ends); the
reader's best-logit sentence is kept. Printed: the rank AUC, right answers
against unanswerable questions, of each score alone (the logit, the best
span's start + end logit, its probability, the [CLS] span logit, the logit
margin, the best start and end logits, the [CLS] span's lead over the best
span: the null score of a reader trained with ``train_reader.py --null-span``),
then of logistic regressions over the logit and others, 2 folds by
article, with the share of unanswerable questions under the 5% quantile of
right answers.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
V2 = ROOT.parent / "shared" / "data" / "squad2-tune" / "squad-v2.0-dev-tune.json.gz"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
NAMES = ["logit", "span_logit", "span_prob", "cls", "margin", "start_max", "end_max", "null_margin"]


def main() -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from qa.encoder import model_run
    from qa.reader import DEFAULT_READER, MAX_PHRASE_TOKENS, load_reader
    from qa.squad import load_squad
    from qa.verify import feeds, verifier_text

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reader", nargs="?", default=str(DEFAULT_READER))
    parser.add_argument("--questions", type=int, default=350, help="answerable and unanswerable questions each")
    args = parser.parse_args()
    data = load_squad(V2)
    reader = load_reader(args.reader)
    articles = {a.doc: a for a in data.articles}
    qs = list(data.questions)
    random.Random(0).shuffle(qs)
    asked = [q for q in qs if q.answerable][: args.questions] + [q for q in qs if not q.answerable][: args.questions]
    rows = []
    for q in asked:
        a = articles[q.article]
        start, end = q.paragraph
        sentences, pos = [], start
        for s in _SENTENCE_END.split(a.text[start:end]):
            at = a.text.index(s, pos)
            sentences.append((at, at + len(s), s))
            pos = at + len(s)
        contexts = [a.title + "." + (" " + sentences[i - 1][2] if i else "") for i in range(len(sentences))]
        encodings = reader._tokenizer.encode_batch(
            [(q.question, verifier_text(s[2], c)) for s, c in zip(sentences, contexts, strict=True)]
        )
        with model_run() as alone:
            session = reader._sessions.all if alone else reader._sessions.one()
            logit, starts, ends = session.run(None, feeds(encodings))[:3]
        best = int(np.argmax(logit))
        enc, limit = encodings[best], len(sentences[best][2])
        pairs = zip(enc.sequence_ids, enc.offsets, strict=True)
        allowed = np.array([sq == 1 and b <= limit and b > a0 for sq, (a0, b) in pairs])
        idx = np.flatnonzero(allowed)
        s, e = starts[best][idx], ends[best][idx]
        n = len(idx)
        mask = np.triu(np.ones((n, n), bool)) & np.tri(n, n, MAX_PHRASE_TOKENS - 1, dtype=bool)
        ps, pe = np.exp(s - s.max()), np.exp(e - e.max())
        prob = float((np.outer(ps / ps.sum(), pe / pe.sum()) * mask).max())
        ranked = np.sort(logit)[::-1]
        margin = float(ranked[0] - ranked[1]) if len(ranked) > 1 else 5.0
        right = q.answerable and any(sentences[best][0] <= a0 and b0 <= sentences[best][1] for a0, b0 in q.spans)
        span_logit = float((s[:, None] + e[None, :])[mask].max())
        null = float(starts[best][0] + ends[best][0])
        rows.append((q.article, q.answerable, right, float(logit[best]), span_logit,
                     prob, null, margin, float(s.max()), float(e.max()), null - span_logit))  # fmt: skip
    article = np.array([r[0] for r in rows])
    answerable = np.array([r[1] for r in rows])
    right = np.array([r[2] for r in rows])
    x = np.array([r[3:] for r in rows], dtype=float)
    judged = right | ~answerable  # right answers against unanswerable questions
    print(f"{len(rows)} questions; the best-logit sentence is right for {right[answerable].mean():.3f} of answerable")
    for i, name in enumerate(NAMES):
        print(f"AUC {name:10} {roc_auc_score(right[judged], x[judged, i]):.3f}")
    order = sorted(set(article))
    fold = np.array([order.index(a) % 2 for a in article])
    for cols in ([0], [0, 4], [0, 3], [0, 7], [0, 3, 4], [0, 4, 7], list(range(len(NAMES)))):
        score = np.zeros(len(rows))
        for k in (0, 1):
            train, test = fold != k, fold == k
            z = x[:, cols]
            mean, sd = z[train].mean(0), z[train].std(0) + 1e-9
            model = LogisticRegression(C=10, max_iter=2000).fit(
                ((z - mean) / sd)[train & judged], right[train & judged]
            )
            score[test] = model.decision_function(((z - mean) / sd)[test])
        under = (score[~answerable] < np.quantile(score[answerable & right], 0.05)).mean()
        print(f"cv {'+'.join(NAMES[c] for c in cols):45} AUC {roc_auc_score(right[judged], score[judged]):.3f}"
              f"  unanswerable under the 5% quantile of right answers {under:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
