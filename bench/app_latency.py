"""Web chat latency: start-up to first answer, and per-question latency through gradio_client.

    .venv/bin/python bench/app_latency.py [--start "make run"] [-n 50]

1. Starts the app the way a person does (``make run`` by default; already
   installed, index built) on a free port, polls the page, asks one question
   through gradio_client, and reports the time from process start to that answer.
2. Asks ``-n`` questions (the dev questions, cycled) through the ``/answer``
   endpoint, one at a time, and reports p50/p95.
3. Concurrency: for each of ``--clients`` (default 1, 8, 16, 32), that many
   threads each with its own gradio_client ask ``--per-client`` questions at
   once; reports answers per second, p50/p95 latency, errors, the index
   versions the answers came from, and the CPU an answer cost the server (its
   processes' user + system time in ``/proc``, Linux) and this script's clients.
4. In this process, calls ``qa.answer()`` on the same questions and reports its
   p50, so the two can be compared in the same run on the same machine.

The clients run on the same cores as the server. By default they are made with
``ssl_verify=False``: the app is plain http on 127.0.0.1, so no TLS is ever
negotiated, but with verification on, gradio_client builds two httpx clients
per question, each loading the CA bundle into a new SSL context (about 25 ms of
CPU here), and on two cores that client-side work, not the server, bounds the
concurrent figures. ``--default-client`` keeps gradio_client's defaults.

Not part of ``make test``; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT.parent / "shared" / "eval" / "dev_questions.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def wait_for_page(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with status {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no page at {url} after {timeout:.0f} s")


def client(url: str, default: bool) -> Any:
    """A gradio_client for the app (see the module's note on ``ssl_verify``)."""
    from gradio_client import Client

    return Client(url, verbose=False) if default else Client(url, verbose=False, ssl_verify=False)


def session_cpu(sid: int) -> float | None:
    """CPU seconds (user + system) used so far by the live processes of session ``sid`` (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, seen = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[3]) == sid:  # fields from the state on: state, ppid, pgrp, session, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
            seen = True
    return total / tick if seen else None


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def concurrent_load(
    url: str, questions: list[str], clients: int, per_client: int, default: bool, server: int
) -> dict[str, Any]:
    """``clients`` threads, each with its own gradio_client, asking ``per_client`` questions at once.

    Also the CPU the server (session ``server``) and this process's clients spent while they asked.
    """
    connected = [client(url, default) for _ in range(clients)]
    times: list[float] = []
    versions: set[str] = set()
    errors = 0
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def work(n: int) -> None:
        nonlocal errors
        barrier.wait()
        for i in range(per_client):
            q = questions[(n * per_client + i) % len(questions)]
            t = time.perf_counter()
            try:
                a = connected[n].predict(q, api_name="/answer")
            except Exception:
                with lock:
                    errors += 1
                continue
            with lock:
                times.append(time.perf_counter() - t)
                versions.add(a["index_version"])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    server_before, clients_before = session_cpu(server), own_cpu()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    server_after, clients_after = session_cpu(server), own_cpu()
    server_seconds = server_after - server_before if server_before is not None and server_after is not None else None
    return {
        "clients": clients, "answers": len(times), "seconds": seconds, "per_second": len(times) / seconds,
        "p50": statistics.median(times) if times else 0.0, "p95": percentile(times, 95) if times else 0.0,
        "errors": errors, "versions": len(versions),
        "server_cpu": server_seconds / len(times) if server_seconds is not None and times else None,
        "client_cpu": (clients_after - clients_before) / len(times) if times else None,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", default="make run", help="command that starts the app (QA_PORT is set for it)")
    parser.add_argument("-n", type=int, default=50, help="questions to time through gradio_client")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--index", default="index", help="the index the app serves, for the in-process comparison")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--clients", default="1,8,16,32", help="concurrent client counts, comma-separated")
    parser.add_argument("--per-client", type=int, default=20, help="questions each concurrent client asks")
    parser.add_argument(
        "--default-client", action="store_true", help="gradio_client's defaults (an SSL context per request)"
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    questions = [json.loads(line)["question"] for line in args.questions.read_text().splitlines() if line.strip()]
    asked = [questions[i % len(questions)] for i in range(args.n)]
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "QA_PORT": str(port)}

    started = time.perf_counter()
    proc = subprocess.Popen(
        shlex.split(args.start), cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_page(url, proc, args.timeout)
        page_up = time.perf_counter() - started
        first = client(url, args.default_client).predict(asked[0], api_name="/answer")
        first_answer = time.perf_counter() - started
        assert first["sources"], first

        app_times = []
        one = client(url, args.default_client)
        for q in asked:
            t = time.perf_counter()
            one.predict(q, api_name="/answer")
            app_times.append(time.perf_counter() - t)
        loads = [
            concurrent_load(url, questions, int(c), args.per_client, args.default_client, proc.pid)
            for c in args.clients.split(",")
        ]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this script started
        proc.wait(timeout=30)

    from qa import answer, get_engine

    get_engine(args.index).retriever()  # load once, as the app does at start-up
    answer(asked[0], index=args.index)
    direct_times = []
    for q in asked:
        t = time.perf_counter()
        answer(q, index=args.index)
        direct_times.append(time.perf_counter() - t)

    ms = 1000
    print(f"command: {args.start!r} (port {port}); {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    print(f"clients: gradio_client {'defaults' if args.default_client else 'ssl_verify=False (plain http)'}")
    print(f"start -> page served:  {page_up:.1f} s")
    print(f"start -> first answer: {first_answer:.1f} s  (question: {asked[0]!r})")
    print(
        f"app via gradio_client, {len(app_times)} questions: p50 {statistics.median(app_times) * ms:.0f} ms, "
        f"p95 {percentile(app_times, 95) * ms:.0f} ms, max {max(app_times) * ms:.0f} ms"
    )
    for load in loads:
        print(
            f"{load['clients']:>2} concurrent clients: {load['answers']} answers in {load['seconds']:.1f} s = "
            f"{load['per_second']:.1f}/s, p50 {load['p50'] * ms:.0f} ms, p95 {load['p95'] * ms:.0f} ms, "
            f"errors {load['errors']}, index versions {load['versions']}"
        )
        if load["server_cpu"] is not None:
            print(
                f"   CPU an answer: server {load['server_cpu'] * ms:.1f} ms, "
                f"this script's clients {load['client_cpu'] * ms:.1f} ms"
            )
    if loads and loads[0]["clients"] == 1:
        for load in loads[1:]:
            gain = load["per_second"] / loads[0]["per_second"]
            print(f"throughput {load['clients']} clients / 1 client: {gain:.2f}x")
    print(
        f"answer() in process, same {len(direct_times)} questions: "
        f"p50 {statistics.median(direct_times) * ms:.0f} ms, "
        f"p95 {percentile(direct_times, 95) * ms:.0f} ms"
    )


if __name__ == "__main__":
    main()
