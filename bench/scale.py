"""Scale benchmark: build and query a corpus of N sentences (100k, 1M).

    .venv/bin/python bench/scale.py --sentences 100000 --workdir /tmp/qa-scale

Real text first: the BBC articles, SciFact's abstracts and the SQuAD tuning
articles from ``../shared/data`` (about 100k sentences together). Above that,
documents are generated from the real ones: a real document's passages,
subsampled and reordered under its own title. Every embedded text of a
generated document (the sentence alone; title + previous sentence + sentence)
is then one a real document already has, so its vectors come from the
content-hash cache of the previous build instead of being embedded again
(embedding 1M new texts would take hours on two cores). The output says how
many sentences are real and how many generated.

Because generated sentences repeat real ones, several sentences share one
vector: recall@10 of the approximate index is measured tie-aware (a returned
id counts when its exact score is >= the exact 10th score - 1e-6).

The workdir is kept: the real corpus's index is built once (the slow part,
embedding) and reused by the next run through the content-hash cache.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from qa.types import Manifest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
BBC = DATA / "bbc-news" / "bbc-fulltext.zip"
SCIFACT = DATA / "beir-scifact" / "corpus.jsonl.gz"
SQUAD = DATA / "squad-tune" / "squad-v1.1-dev-tune.json.gz"
_UNSAFE = re.compile(r"[^\w.-]+")


def write_if_changed(path: Path, body: bytes) -> None:
    """Leave an unchanged file alone: its stat stays, so a rebuild is a no-op."""
    if not path.exists() or path.read_bytes() != body:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def write_real(corpus: Path, limit: int | None = None) -> list[Path]:
    """The real documents as corpus files (BBC, SciFact, SQuAD; the first ``limit`` of each); returns their paths."""
    from qa.squad import load_squad

    paths: list[Path] = []
    with zipfile.ZipFile(BBC) as z:
        names = [name for name in sorted(z.namelist()) if name.endswith(".txt")]
        for name in names[:limit]:
            parts = Path(name).parts  # bbc/<category>/<nnn>.txt
            target = corpus / "bbc" / parts[-2] / parts[-1]
            write_if_changed(target, z.read(name))
            paths.append(target)
    with gzip.open(SCIFACT, "rt", encoding="utf-8") as f:
        for line in itertools.islice(f, limit):
            d = json.loads(line)
            target = corpus / "scifact" / f"{_UNSAFE.sub('_', str(d['_id']))}.txt"
            title = " ".join(str(d["title"]).split())
            write_if_changed(target, f"{title}\n\n{d['text'].strip()}\n".encode())
            paths.append(target)
    squad = load_squad(SQUAD)
    for a in squad.articles[:limit]:
        target = corpus / "squad" / a.doc
        write_if_changed(target, a.text.encode("utf-8"))
        paths.append(target)
    return paths


def generated_text(source: str, rng: random.Random) -> str | None:
    """A new document from a real one: its title line, then its passages subsampled and reordered.

    Passages are kept whole, so each sentence keeps the sentence before it and
    every embedding view repeats one of the real document's.
    """
    blocks = [b for b in re.split(r"\n\s*\n", source) if b.strip()]
    if len(blocks) < 3:
        return None
    title, passages = blocks[0], blocks[1:]
    keep = rng.sample(passages, max(1, (len(passages) * rng.randint(60, 100)) // 100))
    return "\n\n".join([title, *keep]) + "\n"


def write_generated(corpus: Path, real: Path, sentences_per_doc: dict[str, int], needed: int) -> int:
    """Generated documents under ``corpus/gen`` until about ``needed`` sentences; returns the estimate.

    ``sentences_per_doc`` (document id -> sentences, from the real corpus's
    index) estimates a generated document's size from the share of its
    source's passages it keeps. Files beyond what is needed are removed.
    """
    rng = random.Random(12)
    sources = sorted(d for d in sentences_per_doc if not d.startswith("gen/"))
    rng.shuffle(sources)
    made, estimate, n = set(), 0, 0
    while estimate < needed and sources:
        doc = sources[n % len(sources)]
        text = generated_text((real / doc).read_text(encoding="utf-8", errors="replace"), rng)
        n += 1
        if text is None:
            if n > 3 * len(sources) and not made:
                break  # no source has passages to reuse
            continue
        source_blocks = len([b for b in re.split(r"\n\s*\n", (real / doc).read_text(errors="replace")) if b.strip()])
        kept = len([b for b in re.split(r"\n\s*\n", text) if b.strip()])
        estimate += max(1, round(sentences_per_doc[doc] * kept / source_blocks))
        name = f"gen/{len(made) // 1000:04d}/{len(made) % 1000:03d}.txt"
        write_if_changed(corpus / name, text.encode("utf-8"))
        made.add(name)
    for old in sorted((corpus / "gen").rglob("*.txt")) if (corpus / "gen").is_dir() else []:
        if old.relative_to(corpus).as_posix() not in made:
            old.unlink()
    return estimate


def questions(limit: int) -> list[str]:
    """Real questions: SQuAD's (about the SQuAD articles) and SciFact's claims, alternating."""
    with gzip.open(SQUAD, "rt", encoding="utf-8") as f:
        data = json.load(f)
    squad = [q["question"] for a in data["data"] for p in a["paragraphs"] for q in p["qas"]]
    claims = [json.loads(line)["text"] for line in (SCIFACT.parent / "queries.jsonl").open(encoding="utf-8")]
    rng = random.Random(3)
    rng.shuffle(squad)
    rng.shuffle(claims)
    mixed = [q for pair in zip(squad, claims, strict=False) for q in pair]
    return mixed[:limit]


def rss_mb() -> float:
    return _status_mb("VmRSS")


def rss_parts() -> str:
    """Anonymous memory (this process's own) and file-backed pages (the memory-mapped index, shareable)."""
    return f"{_status_mb('RssAnon'):.0f} MB anonymous + {_status_mb('RssFile'):.0f} MB file-backed"


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dir_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def pct(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):7.2f} ms  p95 {np.percentile(ms, 95):7.2f} ms"


def query_run(index: Path, n_questions: int, n_ranked: int) -> None:
    """In a fresh process: load time, RSS, warm latency, recall@10 of the approximate index."""
    import faiss

    from qa import store
    from qa.ann import exact_kth
    from qa.answer import Engine
    from qa.retrieve import Retriever

    rss0 = rss_mb()
    t = time.perf_counter()
    folder = store.current_folder(index)
    assert folder is not None
    data = store.load_folder(folder)
    retriever = Retriever(data)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    _ = retriever.encoder.model
    model_s = time.perf_counter() - t
    print(
        f"load: index {load_s:.2f} s (checksums: sha256 of small files, sampled fingerprint of files > 64 MB), "
        f"encoder {model_s:.2f} s",
        flush=True,
    )
    print(f"RSS: {rss0:.0f} MB at start, {rss_mb():.0f} MB after load ({rss_parts()})", flush=True)
    engine = Engine(index)
    engine.live._retriever = retriever  # the one just timed; the engine's own freshness walk is timed below
    engine.live._current_stamp = engine.live._stamp()
    qs = questions(n_questions)
    vectors = np.stack([retriever.embed(q) for q in qs[:50]])
    t = time.perf_counter()
    ranker = engine.ranker
    engine.ranker = None
    for q in qs[:20]:
        engine.answer(q)  # warm-up
    first_ms = []
    for q in qs:
        t0 = time.perf_counter()
        engine.answer(q)
        first_ms.append((time.perf_counter() - t0) * 1000)
    print(f"answer, first stage only (QA_RANKER=none), {len(qs)} questions: {pct(first_ms)}", flush=True)
    if ranker is not None and n_ranked:
        engine.ranker = ranker
        ranked_ms = []
        for q in qs[:n_ranked]:
            t0 = time.perf_counter()
            engine.answer(q)
            ranked_ms.append((time.perf_counter() - t0) * 1000)
        print(f"answer, shipped ranker + reader, {n_ranked} questions: {pct(ranked_ms)}", flush=True)
    print(f"RSS after {len(qs)}+{n_ranked} questions: {rss_mb():.0f} MB ({rss_parts()})", flush=True)

    # Dense first stage alone: the index as built against exact search over the same vectors.
    vectors = np.stack([retriever.embed(q) for q in qs[:n_questions]])
    k, m = 10, 200
    search_ms = []
    _, found = data.vectors.search(vectors[:1], m)
    for v in vectors:
        t0 = time.perf_counter()
        data.vectors.search(v.reshape(1, -1), m)
        search_ms.append((time.perf_counter() - t0) * 1000)
    _, found = data.vectors.search(vectors, k)
    tenth = exact_kth(vectors, data.matrix, k)
    hits = [
        (np.asarray(data.matrix[np.sort(f[f >= 0])], dtype=np.float32) @ vectors[i] >= tenth[i] - 1e-6).sum() / k
        for i, f in enumerate(found)
    ]
    kind = data.manifest.search
    print(f"vector search ({kind}), top {m}: {pct(search_ms)}", flush=True)
    print(
        f"recall@10 against exact search, tie-aware (a returned vector counts when its exact score is >= "
        f"the exact 10th - 1e-6; generated text repeats vectors): {np.mean(hits):.4f} over {len(vectors)} questions",
        flush=True,
    )
    if kind.get("kind") != "flat":
        flat, step = faiss.IndexFlatIP(data.matrix.shape[1]), 100_000
        for a in range(0, len(data.matrix), step):
            flat.add(np.asarray(data.matrix[a : a + step], dtype=np.float32))
        exact_ms = []
        for v in vectors[:200]:
            t0 = time.perf_counter()
            flat.search(v.reshape(1, -1), m)
            exact_ms.append((time.perf_counter() - t0) * 1000)
        print(f"exact search (IndexFlatIP) over the same {flat.ntotal} vectors, top {m}: {pct(exact_ms)}", flush=True)
    t = time.perf_counter()
    status = engine.status()
    print(f"engine status (walks the corpus, stat-based): {time.perf_counter() - t:.2f} s, {status['state']}")


def steps(manifest: Manifest) -> str:
    """Where a build's time went, from its manifest."""
    b = manifest.build
    return (f"split {b['split_seconds']} s, BM25 {b['bm25_seconds']} s, "
            f"vector index {manifest.search.get('seconds', 0)} s")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=100_000, help="target corpus size in sentences")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qa-scale"), help="kept between runs")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--ranked", type=int, default=200, help="questions also answered with the shipped ranker")
    parser.add_argument("--query-only", action="store_true", help="skip the builds: query the last built index")
    parser.add_argument("--real", type=int, help="only the first N documents of each real source (smoke runs)")
    parser.add_argument("--query", type=Path, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    if args.query:
        query_run(args.query, args.questions, args.ranked)
        return 0

    from qa import store
    from qa.build import build_index

    work = args.workdir
    corpus, real_index, index = work / "corpus", work / "index", work / f"index-{args.sentences}"
    if not args.query_only:
        t = time.perf_counter()
        write_real(corpus, args.real)
        if (corpus / "gen").is_dir():
            shutil.rmtree(corpus / "gen")
        real = build_index(corpus, real_index)
        print(
            f"real corpus: {real.documents} documents, {real.sentences} sentences, {real.vectors} vectors "
            f"({real.build.get('embedded', 0)} texts embedded now, in {time.perf_counter() - t:.1f} s; "
            f"{real.build.get('embed_seconds', 0)} s embedding)",
            flush=True,
        )
        data = store.load_folder(store.current_folder(real_index))  # type: ignore[arg-type]
        per_doc = {d: len(data.sentences.rows_of(d)) for d in data.documents}
        del data
        estimate = 0
        if args.sentences > real.sentences:
            estimate = write_generated(corpus, corpus, per_doc, args.sentences - real.sentences)
        shutil.rmtree(index, ignore_errors=True)
        shutil.copytree(real_index, index)  # the content-hash cache: the real corpus's vectors
        t = time.perf_counter()
        full = build_index(corpus, index)
        full_s = time.perf_counter() - t
        b = full.build
        print(
            f"corpus: {full.documents} documents, {full.sentences} sentences ({real.sentences} real, "
            f"{full.sentences - real.sentences} generated from real documents' passages; ~{estimate} estimated), "
            f"{full.vectors} vectors",
            flush=True,
        )
        print(
            f"build: {full_s:.1f} s with every vector from the content-hash cache ({b['embedded']} embedded, "
            f"{b['reused']} reused); {steps(full)}: {full.search}",
            flush=True,
        )
        rate = real.build.get("embed_seconds", 0) / max(real.build.get("embedded", 0), 1)
        if rate:
            print(
                f"  (embedding all {full.vectors} texts at the measured {rate * 1000:.1f} ms/text would add "
                f"{rate * full.vectors / 60:.0f} min)",
                flush=True,
            )
        print(f"index size on disk: {dir_mb(store.current_folder(index)):.0f} MB", flush=True)  # type: ignore[arg-type]
        t = time.perf_counter()
        noop = build_index(corpus, index)
        print(f"no-op rebuild: {time.perf_counter() - t:.2f} s in process (noop={noop.build.get('noop')})", flush=True)
        t = time.perf_counter()
        cli = [sys.executable, "-m", "qa.cli", "index", "build", "--corpus", str(corpus), "--index", str(index)]
        subprocess.run(cli, check=True, capture_output=True)
        print(
            f"no-op `qa index build` in a new process (unchanged files found by the stat the manifest records): "
            f"{time.perf_counter() - t:.2f} s",
            flush=True,
        )
        edit = corpus / "bbc" / "business" / "001.txt"
        text = edit.read_text(encoding="utf-8")
        edit.write_text(
            text.replace("fourth quarter sales rose 2%", "fourth quarter clove sales rose 7%", 1), encoding="utf-8"
        )
        t = time.perf_counter()
        edited = build_index(corpus, index)
        edit_s = time.perf_counter() - t
        b = edited.build
        print(
            f"one-sentence-edit rebuild: {edit_s:.2f} s = {100 * edit_s / full_s:.1f}% of the build above "
            f"({b['embedded']} embedded; {steps(edited)}, updated={edited.search.get('updated', False)})",
            flush=True,
        )
        edit.write_text(text, encoding="utf-8")
        build_index(corpus, index)  # back to the real text (the next run starts from it)
    proc = subprocess.run(
        [sys.executable, __file__, "--query", str(index), "--questions", str(args.questions),
         "--ranked", str(args.ranked)] + (["-v"] if args.verbose else []),
        check=False,
    )  # fmt: skip
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
