"""Fault and load: many clients ask while the corpus is edited and rebuilt by another process.

    .venv/bin/python bench/fault_load.py [--clients 32] [--seconds 60] [--every 8] [--workdir DIR]

1. Writes a corpus (the article and ``--stations`` small files, one fact each:
   "The beacon code of station 7 is K7-…") in a temp folder, builds its index
   and starts ``qa serve`` on 127.0.0.1 (a free port; nothing leaves this
   machine) without a watcher.
2. ``--clients`` threads, each its own gradio_client ``Client``, ask "What is
   the beacon code of station N?" through ``/answer`` for ``--seconds``.
3. Meanwhile, every ``--every`` seconds, the corpus is edited (a station file
   deleted, one added, one's code changed, in turn) and ``qa index build`` runs
   in a separate process; the bench notes when each build returned and reads
   the new version's sentences.
4. Reports requests, errors, answers inconsistent with their index version (a
   source not among that version's sentences, or an answer text that does not
   quote its first source), answers from a version older than the newest build that
   had returned before the question was sent, answers citing a file whose
   deletion had been built before the question was sent, and p50/p95 latency.

Not part of ``make test``; prints figures (``--json`` for a machine), exits 1
when any of the error counts is not 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from app_latency import free_port, percentile, wait_for_page  # bench/ is this script's folder, so first on sys.path

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = ROOT / "corpus" / "mitsubishi-joins-renault-nissan-alliance.txt"


@dataclass
class Reply:
    sent: float
    received: float
    version: str = ""
    docs: list[str] = field(default_factory=list)
    sources: list[tuple[str, int, int, str]] = field(default_factory=list)
    text: str = ""
    abstained: bool = False
    error: str = ""


@dataclass
class Build:
    returned: float  # monotonic time `qa index build` returned
    version: str
    deleted: str | None  # the station file this build removed, if any


def station(n: int, code: str) -> str:
    return (
        f"Station {n} log\n\n"
        f"The beacon code of station {n} is {code}. "
        f"The keeper of station {n} checks the lamp and the fog horn every night before nine.\n"
    )


def qa_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from qa.cli import main; main()", *args]


def build(corpus: Path, index: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        qa_command("index", "build", "--corpus", str(corpus), "--index", str(index), "--json"),
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    return str(json.loads(out)["version"])


def sentences_of(index: Path, version: str) -> set[tuple[str, int, int, str]]:
    from qa.store import load_folder

    data = load_folder(index / f"v-{version}", verify=False)
    return {(s.doc, s.start, s.end, s.text) for s in data.sentences}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=8.0, help="seconds between corpus edits + rebuilds")
    parser.add_argument("--stations", type=int, default=40)
    parser.add_argument("--workdir", type=Path, help="keep the corpus and index here (default: a temp folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from gradio_client import Client

    work = args.workdir or Path(tempfile.mkdtemp(prefix="qa-fault-load-"))
    corpus, index = work / "corpus", work / "index"
    shutil.rmtree(corpus, ignore_errors=True)
    shutil.rmtree(index, ignore_errors=True)
    corpus.mkdir(parents=True)
    shutil.copy(ARTICLE, corpus / ARTICLE.name)
    rng = random.Random(7)
    live = {n: f"K{n}-{rng.randrange(10**6):06d}" for n in range(1, args.stations + 1)}
    for n, code in live.items():
        (corpus / f"station-{n}.txt").write_text(station(n, code), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    first = build(corpus, index, env)
    versions = {first: sentences_of(index, first)}
    builds = [Build(time.monotonic(), first, None)]

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        # No --watch: only the editor below builds, in its own process.
        qa_command("serve", "--host", "127.0.0.1", "--port", str(port), "--index", str(index), "--corpus", str(corpus)),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    replies: list[Reply] = []
    replies_lock = threading.Lock()
    stop = threading.Event()
    build_seconds: list[float] = []  # each `qa index build` process, start to exit
    try:
        wait_for_page(url, server, timeout=120)
        clients = [Client(url, verbose=False) for _ in range(args.clients)]

        def ask(client: Client, seed: int) -> None:
            r = random.Random(seed)
            while not stop.is_set():
                n = r.randrange(1, args.stations + 12)
                reply = Reply(sent=time.monotonic(), received=0.0)
                try:
                    a = client.predict(f"What is the beacon code of station {n}?", [], 3, api_name="/answer")
                    reply.version, reply.text, reply.abstained = a["index_version"], a["text"], a["abstained"]
                    reply.sources = [(s["doc"], s["start"], s["end"], s["text"]) for s in a["sources"]]
                    reply.docs = [s["doc"] for s in a["sources"]]
                except Exception as exc:  # any failed request is counted
                    reply.error = f"{type(exc).__name__}: {exc}"
                reply.received = time.monotonic()
                with replies_lock:
                    replies.append(reply)

        threads = [threading.Thread(target=ask, args=(c, i), daemon=True) for i, c in enumerate(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        edits = itertools.cycle(["delete", "add", "change"])
        next_new = args.stations + 1
        while time.monotonic() - started < args.seconds:
            time.sleep(min(args.every, max(0.0, args.seconds - (time.monotonic() - started))))
            if time.monotonic() - started >= args.seconds - 1:
                break
            edit, deleted = next(edits), None
            if edit == "delete":
                n = rng.choice(sorted(live))
                (corpus / f"station-{n}.txt").unlink()
                del live[n]
                deleted = f"station-{n}.txt"
            elif edit == "add":
                live[next_new] = f"K{next_new}-{rng.randrange(10**6):06d}"
                (corpus / f"station-{next_new}.txt").write_text(station(next_new, live[next_new]), encoding="utf-8")
                next_new += 1
            else:
                n = rng.choice(sorted(live))
                live[n] = f"K{n}-{rng.randrange(10**6):06d}"
                (corpus / f"station-{n}.txt").write_text(station(n, live[n]), encoding="utf-8")
            build_started = time.monotonic()
            version = build(corpus, index, env)
            builds.append(Build(time.monotonic(), version, deleted))
            build_seconds.append(round(builds[-1].returned - build_started, 1))
            versions[version] = sentences_of(index, version)  # read now: later builds prune it
        stop.set()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    order = {b.version: i for i, b in enumerate(builds)}
    errors = [r for r in replies if r.error]
    answered = [r for r in replies if not r.error]
    inconsistent = [
        r for r in answered
        if r.version not in versions
        or not set(r.sources) <= versions[r.version]
        or (r.sources and not r.abstained and " ".join(r.sources[0][3].split()) not in r.text)
    ]  # fmt: skip
    older = []
    cites_deleted = []
    for r in answered:
        done = [b for b in builds if b.returned < r.sent]
        if done and order.get(r.version, -1) < order[done[-1].version]:
            older.append(r)
        gone = {b.deleted for b in done if b.deleted}
        if gone & set(r.docs):
            cites_deleted.append(r)
    latencies = [1000 * (r.received - r.sent) for r in answered]
    report = {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "rebuilds": len(builds) - 1,
        "rebuild_seconds": build_seconds,
        "versions_answered": len({r.version for r in answered}),
        "requests": len(replies),
        "errors": len(errors),
        "inconsistent_with_version": len(inconsistent),
        "older_than_last_build": len(older),
        "cite_deleted_file": len(cites_deleted),
        "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
        "requests_per_s": round(len(replies) / elapsed, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:28} {value}")
        for r in errors[:3]:
            print("error:", r.error[:200])
    bad = report["errors"] or report["inconsistent_with_version"] or report["older_than_last_build"]
    return 1 if bad or report["cite_deleted_file"] else 0


if __name__ == "__main__":
    sys.exit(main())
