"""Build throughput, local against Ray: texts embedded a second by a build from scratch, back to back.

    .venv/bin/python bench/ray_build.py [--articles 300] [--address HOST:PORT] [--workdir DIR]

The corpus is the article plus ARTICLES BBC articles, spread evenly over the
2,225 (one of every seven for the default 300, as in tests/test_ray.py). It
is built from scratch three times, into fresh index folders:

1. locally, on every core of this machine (``qa.build.build_index``);
2. on Ray with one one-CPU worker node (a head node started with ``ray start``);
3. on Ray with two one-CPU worker nodes (a second node joins).

The cluster runs on this machine (``tests/ray_cluster.py``), connected on
loopback; run the bench as ``python -m tests.netns .venv/bin/python
bench/ray_build.py`` for listeners on loopback alone, as in ``make test``. It
is stopped afterwards; each Ray build starts once the cluster's processes are
idle (a node's agents go on starting after it joins). With ``--address`` an existing cluster is used
instead, with one and then two embedding actors (``--actors``). A rate is
texts embedded / the whole build's seconds (reading, splitting, embedding,
BM25, search index, writing). Beside it, how busy the machine's cores were
over the build (``/proc/stat``: every process, Ray's own and the driver
included): a build near 100% is bound by the cores, and only less work makes
it faster. Printed: each build's rate, then two worker
nodes against one (target ≥ 1.7) and Ray's two against the local build on
the same two cores (target: within 15%, ≥ 0.85). One run is one round: Ray
reads its cluster settings once a process, and a local build in the same
process would reuse the first one's splits, so repeat the command for more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.ray_cluster

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


def timed(name: str, build: Any, index: Path) -> dict[str, Any]:
    if index.exists():
        shutil.rmtree(index)
    busy_before, total_before = cpu_times()
    started = time.perf_counter()
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


def ray_builds(corpus: Path, work: Path, address: str | None) -> list[dict[str, Any]]:
    """The two Ray builds: on one worker node, then on two (or one actor, then two, on ``address``)."""
    from tests.ray_cluster import RayCluster

    cluster = None
    if address is None:
        # Ray's session folder holds Unix sockets, whose paths must stay short.
        cluster = RayCluster(Path(tempfile.mkdtemp(prefix="qa-ray-", dir="/tmp"))).start(nodes=1)
        os.environ.update(cluster.driver_env)  # before Ray is imported: it reads them then
        address = cluster.address
    import ray

    from qa.cluster import build_index_on_ray, connect

    rows = []
    try:
        for workers in (1, 2):
            if workers == 2 and cluster is not None:
                cluster.add_node()
            connect(address)
            deadline = time.monotonic() + 60
            while ray.cluster_resources().get("CPU", 0) < workers and time.monotonic() < deadline:
                time.sleep(0.5)
            if cluster is not None:
                print(f"cluster idle after {settle(cluster):.1f} s", flush=True)
            actors = workers if cluster is None else None  # own cluster: one actor per CPU, as by default

            def build(index: Path, actors: int | None = actors) -> Any:
                return build_index_on_ray(corpus, index, address=address, actors=actors)

            name = f"ray, {workers} one-CPU worker" + ("s" if workers > 1 else "")
            rows.append(timed(name, build, work / f"ray{workers}"))
            ray.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.folder, ignore_errors=True)
    return rows


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
    parser.add_argument("--articles", type=int, default=300, help="BBC articles beside the article (default 300)")
    parser.add_argument("--address", help="an existing Ray cluster (HOST:PORT) with at least two CPUs")
    parser.add_argument("--bbc", type=Path, default=BBC, help="the BBC News zip (../shared/data/bbc-news/)")
    parser.add_argument("--workdir", type=Path, help="keep the corpus and indexes here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="qa-ray-bench-"))
    corpus = work / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    write_corpus(corpus, args.articles, args.bbc)
    print(f"corpus: the article and {args.articles} BBC articles; load average {os.getloadavg()[0]:.2f}", flush=True)

    from qa.build import build_index
    from qa.embed import DEFAULT_MODEL, get_encoder

    get_encoder(DEFAULT_MODEL).model  # noqa: B018 - the export exists before any build is timed

    rows = [timed("local (every core)", lambda index: build_index(corpus, index), work / "local")]
    rows += ray_builds(corpus, work, args.address)
    for workers in (1, 2):
        print(f"largest difference, local and Ray ({workers}) vectors: {difference(work, workers):.3g}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)

    def rate(name: str) -> float:
        return next(float(r["texts_per_s"]) for r in rows if r["build"] == name)

    local, ray1, ray2 = rate("local (every core)"), rate("ray, 1 one-CPU worker"), rate("ray, 2 one-CPU workers")
    print(f"two workers / one: {ray2 / ray1:.2f}x (target >= 1.7)")
    print(f"Ray, two workers / local on the same two cores: {ray2 / local:.2f} (target >= 0.85)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
