"""Answer latency against the bare cost of one embedding, in one process and run.

    .venv/bin/python bench/latency.py [--index DIR] [--questions FILE] [--rounds N]

Prints, for the questions of ../shared/eval/dev_questions.jsonl (by default):
- warm ``answer()`` latency p50/p95;
- the bare cost of ``SentenceTransformer.encode([q])`` plus a numpy dot
  product over the same sentence vectors, p50/p95;
- the ratio of the two p50s;
- the whole-process time of ``qa ask "..."`` on the built index.
The two in-process measurements are interleaved question by question so
machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "eval" / "dev_questions.jsonl"


def percentiles(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):6.2f} ms   p95 {np.percentile(ms, 95):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=str(ROOT / "index"))
    parser.add_argument("--questions", default=str(DEV))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from qa.answer import get_engine

    questions = [json.loads(line)["question"] for line in Path(args.questions).read_text().splitlines() if line]
    engine = get_engine(args.index)
    retriever = engine.retriever()
    model = retriever.encoder.model
    matrix = retriever.data.vectors.reconstruct_n(0, retriever.data.vectors.ntotal)
    for q in questions:  # warm up both paths
        engine.answer(q)
        model.encode([q], normalize_embeddings=True)

    answer_ms: list[float] = []
    bare_ms: list[float] = []
    for _ in range(args.rounds):
        for q in questions:
            retriever.encoder.clear_cache()  # no cached question vectors: every answer embeds
            t = time.perf_counter()
            engine.answer(q)
            answer_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            v = model.encode([q], normalize_embeddings=True)
            _ = matrix @ v[0]
            bare_ms.append((time.perf_counter() - t) * 1000)

    n = retriever.data.manifest.sentences
    print(f"index {args.index}: {n} sentences, {matrix.shape[0]} vectors; {len(answer_ms)} questions")
    print(f"answer() warm            {percentiles(answer_ms)}")
    print(f"encode([q]) + numpy dot  {percentiles(bare_ms)}")
    print(f"ratio of p50s            {np.percentile(answer_ms, 50) / np.percentile(bare_ms, 50):.2f}x")

    runs = []
    for q in questions[:5]:
        t = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).parent / "qa"), "ask", q, "--index", args.index],
            check=True,
            capture_output=True,
        )
        runs.append(time.perf_counter() - t)
    print(f"`qa ask` whole process   median {np.median(runs):.2f} s over {len(runs)} runs")


if __name__ == "__main__":
    main()
