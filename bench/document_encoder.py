"""The shipped document encoder (int8, one activation scale per token) against the fp32 query encoder.

    .venv/bin/python bench/document_encoder.py [--bbc ZIP] [--texts 1500] [--scifact DIR]

In one process, on the first ``--texts`` paragraphs of the BBC news archive:

- cosine of the document model's vectors with fp32's (min and mean);
- the first 50 texts embedded in the batch against each alone (min cosine:
  1.000000 means a text's vector does not depend on its batch-mates, so an
  incremental build equals a build from scratch);
- texts a second for each model, the build's batching, two rounds alternated;
- with ``--scifact``, dense-only SciFact (published protocol: ``title + " " +
  text``, cosine) nDCG@10 and recall@100 by pytrec_eval, the abstracts
  embedded by each model and the queries by fp32, as an index is queried,
  and the seconds the abstracts took.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa.embed import OnnxEncoder, default_model, get_encoder
from qa.eval import dense_run, load_beir, retrieval_metrics

BBC = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "bbc-news" / "bbc-fulltext.zip"


def bbc_paragraphs(zip_path: Path, n: int) -> list[str]:
    """The first ``n`` lines over 40 characters of the archive's ``.txt`` files, in name order."""
    texts: list[str] = []
    with zipfile.ZipFile(zip_path) as z:
        for name in sorted(z.namelist()):
            if name.endswith(".txt"):
                texts += [line for line in z.read(name).decode("latin-1").split("\n") if len(line) > 40]
            if len(texts) >= n:
                break
    return texts[:n]


def scifact(encoder: OnnxEncoder, documents: bool, folder: Path) -> tuple[dict[str, float], float]:
    """Dense-only metrics with the abstracts by the document model (or fp32) and queries by fp32; seconds taken."""
    corpus, queries, qrels = load_beir(folder)
    ids, qids = list(corpus), list(queries)
    started = time.perf_counter()
    docs = encoder.encode([f"{t} {x}".strip() for t, x in (corpus[i] for i in ids)], documents=documents)
    seconds = time.perf_counter() - started
    run = dense_run(encoder.encode([queries[q] for q in qids]), docs, qids, ids)
    return retrieval_metrics(run, qrels), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bbc", type=Path, default=BBC, help="the bbc-fulltext.zip archive")
    parser.add_argument("--texts", type=int, default=1500, help="BBC paragraphs to embed")
    parser.add_argument("--scifact", type=Path, help="a BEIR SciFact folder (../shared/data/beir-scifact)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    encoder = get_encoder(default_model()).model
    if not encoder.info.get("documents"):
        raise SystemExit(f"the export in {encoder.folder} has no document model")
    models = {"fp32 (questions)": False, "int8 per token (documents)": True}
    texts = bbc_paragraphs(args.bbc, args.texts)
    base = encoder.encode(texts)
    for name, documents in models.items():
        batched = encoder.encode(texts, documents=documents)
        cos = (batched * base).sum(axis=1)
        alone = np.stack([encoder.encode([t], documents=documents)[0] for t in texts[:50]])
        fixed = (alone * batched[:50]).sum(axis=1)
        print(
            f"{name:28} cosine with fp32: min {cos.min():.4f}, mean {cos.mean():.5f}; "
            f"in a batch against alone: min {fixed.min():.6f}",
            flush=True,
        )
    for round_ in (1, 2):
        for name, documents in models.items():
            started = time.perf_counter()
            encoder.encode(texts, documents=documents)
            rate = len(texts) / (time.perf_counter() - started)
            print(f"round {round_}: {name:28} {rate:6.1f} texts/s ({len(texts)} BBC paragraphs)", flush=True)
    if args.scifact:
        for name, documents in models.items():
            metrics, seconds = scifact(encoder, documents, args.scifact)
            print(
                f"SciFact dense-only, documents by {name:28} abstracts embedded in {seconds:.1f} s; "
                f"nDCG@10 {metrics['ndcg@10']:.5f}, recall@100 {metrics['recall@100']:.5f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
