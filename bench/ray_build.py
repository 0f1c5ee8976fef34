"""Build throughput, local against Ray: texts embedded a second by builds from scratch, round after round.

    .venv/bin/python bench/ray_build.py [--articles 1100] [--rounds 3] [--address HOST:PORT] [--workdir DIR]
        [--processes]

The corpus is the article plus ARTICLES BBC articles, spread evenly over the
2,225 (one of every two for the default 1,100; one of every seven for 300, the
corpus of tests/test_ray.py). The default is large enough that a build's rate
is the cluster's throughput rather than its start: each Ray build starts
workers and actors of its own, about 3 CPU seconds a node, which with Ray's
other costs comes to a quarter of a 300-article local build's work
(docs/benchmarks.md, "Builds on Ray"). A round builds the corpus from scratch
three times, back to back, into fresh index folders:

1. locally, on every core of this machine (``qa.build.build_index``);
2. on Ray with one one-CPU worker node (the head node, started with ``ray start``);
3. on Ray with two one-CPU worker nodes (a second node joins; the next round stops it).

The cluster runs on this machine (``tests/ray_cluster.py``), connected on
loopback; run the bench as ``python -m tests.netns .venv/bin/python
bench/ray_build.py`` for listeners on loopback alone, as in ``make test``. It
is started once and stopped afterwards; each build starts once the cluster's
processes are idle (a node's agents go on starting after it joins), and the
local build runs beside the idle head node. Before the first round, the
article alone is built untimed locally and on Ray, so that every timed build
finds this process's imports done and the cluster as after a first build
(Ray Data keeps three actors of its own on a cluster once it has run; the
workers and embedding actors are a build's own, started anew each time).
With ``--address`` an existing
cluster is used instead, with one and then two embedding actors. A rate is
texts embedded / the whole build's seconds (reading, splitting, embedding,
BM25, search index, writing). Beside it, how busy the machine's cores were
over the build (``/proc/stat``: every process, Ray's own and the driver
included): a build near 100% is bound by the cores, and only less work makes
it faster. Printed: each build's rate, each round's two ratios, two worker
nodes against one (target ≥ 1.7) and Ray's two against the local build on
the same two cores (target: within 15%, ≥ 0.85), then their medians over the
rounds. A ratio is taken within a round, from builds minutes apart, so that
a host whose speed drifts over minutes moves both sides of it alike.

With ``--processes``, each build's CPU seconds by process group as well: the
driver (this process and its reader sandbox), Ray's reading workers (with
their sandboxes), the embedding actors, Ray Data's own actors, Ray's
processes (raylets, GCS, agents) and any other process on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.ray_cluster

from tests import ray_cluster  # noqa: E402  (standard library only; Ray is imported by the builds)

BBC = ROOT.parent / "shared" / "data" / "bbc-news" / "bbc-fulltext.zip"
ARTICLE = ROOT / "corpus" / "mitsubishi-joins-renault-nissan-alliance.txt"


def write_corpus(corpus: Path, articles: int, bbc: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    shutil.copy(ARTICLE, corpus / ARTICLE.name)
    with zipfile.ZipFile(bbc) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".txt"))
        names = names[:: max(1, len(names) // max(1, articles))][:articles]
        for name in names:
            parts = Path(name).parts  # bbc/<category>/<nnn>.txt
            target = corpus / "bbc" / parts[-2] / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))


def cpu_times() -> tuple[int, int]:
    """The machine's (busy, total) CPU time since boot, in clock ticks, every core and process together."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle and iowait
    total = sum(ticks[:8])  # guest time is already counted in user
    return total - idle, total


# Where a build's CPU time goes (--processes): a process belongs to the first group its own or an
# ancestor's command line (Ray's workers show their role there) falls in; the driver is this process.
# Only a command line's first three words are read (a reader sandbox's holds Python code).
GROUPS = (
    ("embedding actors", ("ray::MapWorker",)),
    ("reading workers", ("ray::IDLE", "ray::_read_files", "workers/default_worker.py")),  # or one still starting
    ("Ray's processes", ("/site-packages/ray/", " ray.", "ray::DashboardAgent", "ray::RuntimeEnvAgent")),
    ("Ray Data's actors", ("ray::",)),  # its stats and autoscaling actors, kept between builds
)


class ProcessCPU:
    """CPU seconds by process group over a ``with`` block: every process sampled from /proc every 0.2 s.

    A process that starts in the block counts from zero; one that ends loses
    what it used after its last sample (under 0.2 s).
    """

    def __init__(self) -> None:
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._first: dict[int, int] = {}  # pid -> CPU ticks when the block began
        self._last: ray_cluster.Table = {}  # as last sampled
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _add(self, sample: ray_cluster.Table) -> None:
        for pid, (parent, command, ticks) in sample.items():
            if not command and pid in self._last:  # ended, not yet reaped: its command line is gone
                command = self._last[pid][1]
            self._last[pid] = (parent, command, ticks)

    def _run(self) -> None:
        while not self._done.wait(0.2):
            self._add(ray_cluster.process_table())

    def __enter__(self) -> ProcessCPU:
        self._first = {pid: ticks for pid, (_, _, ticks) in ray_cluster.process_table().items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._add(ray_cluster.process_table())

    def group(self, pid: int) -> str:
        seen: set[int] = set()
        while pid in self._last and pid not in seen:
            if pid == os.getpid():
                return "driver"
            seen.add(pid)
            parent, command, _ = self._last[pid]
            words = " ".join(command.split()[:3])
            for name, parts in GROUPS:
                if any(part in words for part in parts):
                    return name
            pid = parent
        return "other processes"

    def seconds(self) -> dict[str, float]:
        """CPU seconds by group, largest first."""
        groups: dict[str, float] = {}
        for pid, (_, _, ticks) in self._last.items():
            used = (ticks - self._first.get(pid, 0)) / self._ticks
            if used > 0:
                group = self.group(pid)
                groups[group] = groups.get(group, 0.0) + used
        return {name: round(value, 2) for name, value in sorted(groups.items(), key=lambda g: -g[1])}


def timed(name: str, build: Any, index: Path, processes: bool = False) -> dict[str, Any]:
    if index.exists():
        shutil.rmtree(index)
    busy_before, total_before = cpu_times()
    started = time.perf_counter()
    with ProcessCPU() if processes else contextlib.nullcontext() as sampled:
        manifest = build(index)
    seconds = time.perf_counter() - started
    busy_after, total_after = cpu_times()
    report = manifest.build
    texts = int(report["embedded"])
    busy = (busy_after - busy_before) / max(total_after - total_before, 1)
    row = {"build": name, "texts": texts, "seconds": round(seconds, 2), "texts_per_s": round(texts / seconds, 1),
           "split_s": report.get("split_seconds"), "embed_s": report.get("embed_seconds"),
           "cores_busy": round(busy, 3)}  # fmt: skip
    print(f"{name:24} {texts:6} texts in {seconds:7.2f} s: {texts / seconds:7.1f} texts/s "
          f"(reading {row['split_s']} s, embedding after it {row['embed_s']} s; "
          f"the machine's cores busy {100 * busy:.1f}% of it)", flush=True)  # fmt: skip
    if sampled is not None:
        row["cpu_s_by_process"] = sampled.seconds()
        groups = ", ".join(f"{group} {value:.1f}" for group, value in row["cpu_s_by_process"].items())
        print(f"{'':24} CPU seconds {sum(row['cpu_s_by_process'].values()):.1f}: {groups}", flush=True)
    return row


def settle(cluster: Any, quiet: float = 0.05, limit: float = 30.0) -> float:
    """Wait until the cluster's processes are idle (under ``quiet`` CPU seconds a second); seconds waited.

    A node's agents go on starting for seconds after ``ray start`` returns and
    its CPUs show in the cluster: that is the node's start, not the build's.
    """
    started = time.monotonic()
    before = cluster.cpu_seconds()
    while time.monotonic() - started < limit:
        time.sleep(1.0)
        now = cluster.cpu_seconds()
        if now - before < quiet:
            break
        before = now
    return time.monotonic() - started


class Builds:
    """The three builds of one corpus, round after round: local, then Ray on one worker node, then on two.

    The cluster (this machine's, loopback; or ``address``'s) is started once:
    each round stops its second node, so the local build runs beside the idle
    head node alone and the first Ray build has one worker, then starts it again.
    """

    def __init__(self, corpus: Path, work: Path, address: str | None, processes: bool = False) -> None:
        self.corpus = corpus
        self.work = work
        self.processes = processes  # sample each build's CPU time by process group
        self.cluster: Any = None
        if address is None:
            # Ray's session folder holds Unix sockets, whose paths must stay short.
            self.cluster = ray_cluster.RayCluster(Path(tempfile.mkdtemp(prefix="qa-ray-", dir="/tmp"))).start(nodes=1)
            os.environ.update(self.cluster.driver_env)  # before Ray is imported: it reads them then
            address = self.cluster.address
            print(f"head node idle after {settle(self.cluster):.1f} s", flush=True)
        self.address = address
        self.nodes = 1

    def local(self) -> dict[str, Any]:
        from qa import corpus
        from qa.build import build_index

        self._nodes(1)
        corpus._passage_pieces.cache_clear()  # a build in this process remembers the last one's passages
        return timed(
            "local (every core)", lambda index: build_index(self.corpus, index), self.work / "local", self.processes
        )

    def ray(self, workers: int) -> dict[str, Any]:
        """A build on Ray with ``workers`` one-CPU nodes (or, on ``address``, that many actors)."""
        name = f"ray, {workers} one-CPU worker" + ("s" if workers > 1 else "")
        return self._on_ray(workers, lambda build: timed(name, build, self.work / f"ray{workers}", self.processes))

    def first_on_ray(self, corpus: Path) -> None:
        """An untimed Ray build of ``corpus`` on one node: Ray Data starts three actors of its own on a
        cluster's first build, kept for the next ones."""
        self._on_ray(1, lambda build: build(self.work / "first-ray", corpus))

    def _on_ray(self, workers: int, run: Callable[..., Any]) -> Any:
        import ray

        from qa.cluster import build_index_on_ray, connect

        self._nodes(workers)
        actors = workers if self.cluster is None else None  # own cluster: one actor per CPU, as by default

        def build(index: Path, corpus: Path = self.corpus) -> Any:
            return build_index_on_ray(corpus, index, address=self.address, actors=actors, force=True)

        connect(self.address)  # before the build is timed, as the local build's imports are
        try:
            return run(build)
        finally:
            ray.shutdown()

    def _nodes(self, nodes: int) -> None:
        """Run on ``nodes`` nodes (1 or 2), the cluster idle; nothing to do on ``address``'s cluster."""
        if self.cluster is None or nodes == self.nodes:
            return
        import ray

        from qa.cluster import connect

        if nodes > self.nodes:
            self.cluster.add_node()
        else:
            self.cluster.remove_node()
        self.nodes = nodes
        connect(self.address)
        try:
            deadline = time.monotonic() + 60
            while ray.cluster_resources().get("CPU", 0) != nodes and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            ray.shutdown()
        print(f"{nodes} node{'s' if nodes > 1 else ''}, idle after {settle(self.cluster):.1f} s", flush=True)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            shutil.rmtree(self.cluster.folder, ignore_errors=True)


def difference(work: Path, workers: int) -> float:
    """The largest difference between a local build's vectors and a Ray build's (same sentences, same order)."""
    import numpy as np

    from qa import store

    def load(index: Path) -> store.IndexData:
        folder = store.current_folder(index)
        assert folder is not None
        return store.load_folder(folder)

    # Both loaded while compared: their matrices are views of files mapped for as long as the data lives.
    local, remote = load(work / "local"), load(work / f"ray{workers}")
    return float(np.max(np.abs(np.asarray(local.matrix) - np.asarray(remote.matrix))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=1100, help="BBC articles beside the article (default 1100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three builds (default 3)")
    parser.add_argument("--address", help="an existing Ray cluster (HOST:PORT) with at least two CPUs")
    parser.add_argument("--bbc", type=Path, default=BBC, help="the BBC News zip (../shared/data/bbc-news/)")
    parser.add_argument("--workdir", type=Path, help="keep the corpus and indexes here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    parser.add_argument("--processes", action="store_true",
                        help="also each build's CPU seconds by process group (/proc sampled every 0.2 s)")  # fmt: skip
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="qa-ray-bench-"))
    corpus = work / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    write_corpus(corpus, args.articles, args.bbc)
    print(f"corpus: the article and {args.articles} BBC articles; load average {os.getloadavg()[0]:.2f}", flush=True)

    from qa.build import build_index

    # Untimed: a build of the article alone, so that every timed build finds this process's
    # imports done and the model's export in place (each Ray build connects before it is timed).
    (work / "first").mkdir(exist_ok=True)
    shutil.copy(ARTICLE, work / "first" / ARTICLE.name)
    build_index(work / "first", work / "first-index", force=True)

    rows: list[dict[str, Any]] = []
    ratios: list[tuple[float, float]] = []
    builds = Builds(corpus, work, args.address, args.processes)
    try:
        builds.first_on_ray(work / "first")
        for number in range(1, args.rounds + 1):
            print(f"round {number}", flush=True)
            local, ray1, ray2 = builds.local(), builds.ray(1), builds.ray(2)
            for row in (local, ray1, ray2):
                row["round"] = number
            rows += [local, ray1, ray2]
            ratios.append((ray2["texts_per_s"] / ray1["texts_per_s"], ray2["texts_per_s"] / local["texts_per_s"]))
            print(f"round {number}: two workers / one {ratios[-1][0]:.2f}x, Ray's two / local {ratios[-1][1]:.2f}",
                  flush=True)  # fmt: skip
    finally:
        builds.stop()
    for workers in (1, 2):
        print(f"largest difference, local and Ray ({workers}) vectors: {difference(work, workers):.3g}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)

    scaling, against_local = (statistics.median(r[i] for r in ratios) for i in (0, 1))
    each = "; ".join(f"{a:.2f}x, {b:.2f}" for a, b in ratios)
    print(f"two workers / one: {scaling:.2f}x (target >= 1.7)")
    print(f"Ray, two workers / local on the same two cores: {against_local:.2f} (target >= 0.85)")
    if args.rounds > 1:
        print(f"(medians of {args.rounds} rounds, each round's builds back to back: {each})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
