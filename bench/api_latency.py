"""What the HTTP API adds to an answer: ``POST /v1/answer`` against ``answer()`` in the same process and run.

    .venv/bin/python bench/api_latency.py [--index DIR] [--questions FILE] [--rounds N]

Serves the chat and its API (``ui.app.launch``) on a free port of 127.0.0.1 in
this process, then asks each question of ``--questions`` (default
../shared/eval/dev_questions.jsonl) ``--rounds`` times, interleaved, both ways:
``engine.answer()`` directly, and ``POST /v1/answer`` through one kept-alive
httpx connection. Before every answer the question cache and the reader's memo
are cleared, so both embed the question and read its candidates afresh. Prints p50/p95 of each, and the overhead: the
median of the per-question differences, and the difference of the p50s (the
target: at most 3 ms). Both answer the same; the script checks they are equal.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "eval" / "dev_questions.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=str(ROOT / "index"))
    parser.add_argument("--questions", default=str(DEV))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", default=None, help="data folder of the served app (default: a temporary one)")
    args = parser.parse_args()

    import tempfile

    import httpx

    from qa.answer import get_engine
    from qa.embed import get_encoder
    from qa.reader import OnnxReader
    from ui.app import build_app, launch

    questions = [json.loads(line)["question"] for line in Path(args.questions).read_text().splitlines() if line]
    engine = get_engine(args.index)
    encoder = get_encoder(engine.retriever().data.manifest.model)

    def forget() -> None:
        encoder.clear_cache()  # no cached question vectors: every answer embeds
        if isinstance(engine.verifier, OnnxReader):
            engine.verifier.clear_cache()  # ... and the reader reads every candidate again

    with tempfile.TemporaryDirectory() as data:
        demo = build_app(index=args.index, engine=engine, data=args.data or data)
        _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
        try:
            direct, served = measure(engine, forget, questions, args.rounds, url, httpx)
        finally:
            demo.close(verbose=False)
    diffs = [s - d for d, s in zip(direct, served, strict=True)]
    print(f"{len(questions)} questions x {args.rounds} rounds, interleaved, caches cleared before each answer")
    print(f"answer() in process     p50 {np.percentile(direct, 50):7.2f} ms   p95 {np.percentile(direct, 95):7.2f} ms")
    print(f"POST /v1/answer (HTTP)  p50 {np.percentile(served, 50):7.2f} ms   p95 {np.percentile(served, 95):7.2f} ms")
    print(
        f"overhead: median per-question difference {statistics.median(diffs):.2f} ms; "
        f"p50 difference {np.percentile(served, 50) - np.percentile(direct, 50):.2f} ms (target <= 3 ms)"
    )


def measure(engine, forget, questions: list[str], rounds: int, url: str, httpx) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    direct: list[float] = []
    served: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for q in questions:  # warm up both paths
            engine.answer(q)
            client.post("/v1/answer", json={"question": q})
        for _ in range(rounds):
            for q in questions:
                forget()
                started = time.perf_counter()
                expected = engine.answer(q).to_dict()
                direct.append((time.perf_counter() - started) * 1000)
                forget()
                started = time.perf_counter()
                response = client.post("/v1/answer", json={"question": q})
                served.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200 or response.json() != json.loads(json.dumps(expected)):
                    raise SystemExit(f"/v1/answer answered {q!r} otherwise than answer(): {response.text[:300]}")
    return direct, served


if __name__ == "__main__":
    main()
