"""SciFact with other retrieval settings, on the index `qa eval --beir --work DIR` built.

    .venv/bin/qa eval --beir ../shared/data/beir-scifact --work /tmp/beir-work   # once
    .venv/bin/python bench/beir_settings.py ../shared/data/beir-scifact /tmp/beir-work

Only query-time settings change, so each line costs the 300 queries, not a rebuild.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from qa.answer import Engine
from qa.eval import load_beir, retrieval_metrics
from qa.retrieve import RetrievalSettings

VARIANTS = {
    "shipped": {},
    "no BM25 (dense sentences + windows)": {"bm25_weight": 0.0},
    "no window view": {"window_weight": 0.0},
    "window view only": {"window_weight": 1.0},
    "no centrality penalty": {"centrality_penalty": 0.0},
    "BM25 weight 0.3": {"bm25_weight": 0.3},
    "BM25 weight 1.0": {"bm25_weight": 1.0},
    "reciprocal-rank fusion": {"fusion": "rrf"},
}


def main() -> None:
    folder, work = Path(sys.argv[1]), Path(sys.argv[2])
    _, queries, qrels = load_beir(folder)
    engine = Engine(work / "index", work / "corpus")
    retriever = engine.retriever()
    for name, change in VARIANTS.items():
        retriever.settings = dataclasses.replace(RetrievalSettings(), **change)
        run = {
            q: {doc.removesuffix(".txt"): score for doc, score in retriever.rank_documents(text, 100).items()}
            for q, text in queries.items()
        }
        m = retrieval_metrics(run, qrels)
        print(f"{name:40} nDCG@10 {m['ndcg@10']:.4f}  recall@10 {m['recall@10']:.4f}  recall@100 {m['recall@100']:.4f}")


if __name__ == "__main__":
    main()
