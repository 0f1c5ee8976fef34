"""Vector search chosen by corpus size: exact up to EXACT_UP_TO vectors, IVF with SQ8 codes above.

Exact search (FAISS ``IndexFlatIP``) costs time in proportion to the corpus
and keeps every vector in memory as float32. Above the break-even measured
for this project (docs/benchmarks.md "Scale"), the index searched first is an inverted
file (``IVF<nlist>,SQ8``): vectors are clustered into ``nlist`` lists and a
question scans only the ``nprobe`` lists nearest to it, holding one byte per
dimension. IVF was chosen over HNSW because it supports removing and adding
vectors by id (incremental rebuilds) and HNSW's graph of float32 vectors does
not fit the memory target at a million sentences.

``nlist`` is about 4·sqrt(n) lists (a power of two). ``nprobe`` is chosen at
build time by measurement: the smallest power of two whose recall@10 against
exact search reaches RECALL_TARGET on held-out sentences of the corpus itself
used as questions. On corpora that hold the questions' answers this tracks
real questions (docs/benchmarks.md "Scale": at a million sentences with 1,024 lists,
held-out recall 0.970 and 0.987 at nprobe 32 and 64, 1,000 SQuAD and SciFact
questions 0.962 and 0.974; with the 4,096 lists this rule makes there, the
calibrated nprobe 128 gave those questions 0.9805). Questions about nothing in the corpus lie farther from every
list and come out lower (on the BBC vectors, 324 SQuAD, SciFact and article
questions got 0.88 at the calibrated nprobe): they are the ones the answer
abstains on, so nprobe is not raised for them. The choice and its figures go
into the manifest's ``search`` field; ``$QA_NPROBE`` overrides it at query time.

``$QA_ANN`` forces a kind: ``exact`` or ``ivf`` (for tests and measurement);
``auto`` (the default) chooses by size.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np

from qa.types import IndexStateError

log = logging.getLogger(__name__)

EXACT_UP_TO = 150_000  # vectors (two per sentence): measured break-even, docs/benchmarks.md "Scale"
RECALL_TARGET = 0.97  # on held-out sentences as questions (docs/benchmarks.md "Scale")
LISTS_PER_ROOT = 4  # nlist / sqrt(n); at 1M sentences 4,096 lists at nprobe 64 match 1,024 at 64 in recall, 3x faster
CALIBRATION_QUERIES = 300
TRAIN_PER_LIST = 48  # k-means training points per list: FAISS asks for 39 at least
KINDS = ("auto", "exact", "ivf")


def kind_setting() -> str:
    raw = os.environ.get("QA_ANN", "auto").strip().lower() or "auto"
    if raw not in KINDS:
        raise IndexStateError(f"QA_ANN must be one of {', '.join(KINDS)}; got {raw!r}")
    return raw


def plan(n: int) -> dict[str, Any]:
    """The search index for ``n`` vectors: ``{"kind": "flat"}`` or ``{"kind": "ivf-sq8", "nlist": ...}``."""
    kind = kind_setting()
    if n == 0 or kind == "exact" or (kind == "auto" and n <= EXACT_UP_TO):
        return {"kind": "flat"}
    # About 4 sqrt(n) lists (within FAISS's guideline of 4-16 sqrt(n)), a power of two so
    # that a corpus growing a little keeps its trained lists; at least 39 points per list.
    nlist = 2 ** round(math.log2(max(LISTS_PER_ROOT * math.sqrt(n), 1.0)))
    nlist = max(1, min(nlist, n // 39))
    return {"kind": "ivf-sq8", "nlist": int(nlist)}


def prepare(index: Any, search: dict[str, Any]) -> None:
    """Set the search-time parameters the manifest records (``$QA_NPROBE`` overrides nprobe)."""
    if search.get("kind") != "ivf-sq8":
        return
    import faiss

    raw = os.environ.get("QA_NPROBE", "").strip()
    nprobe = int(raw) if raw.isdigit() and int(raw) > 0 else int(search["nprobe"])
    faiss.extract_index_ivf(index).nprobe = nprobe


def build(
    vectors: np.ndarray,
    previous: Any = None,
    previous_search: dict[str, Any] | None = None,
    old_rows: np.ndarray | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The search index of ``vectors`` (float32, unit rows) and its manifest entry.

    Returns ``(None, {"kind": "flat"})`` for exact search: the store writes the
    flat index itself. For IVF, ``previous`` (the last build's IVF index) with
    ``old_rows`` (for each row of ``vectors``, the previous row whose vector it
    reuses, or -1) is updated instead of trained again: its lists keep the
    reused vectors under their new row numbers, lose the removed ones, and
    only new vectors are assigned to lists.
    """
    chosen = plan(len(vectors))
    if chosen["kind"] == "flat":
        return None, chosen
    import faiss

    started = time.perf_counter()
    same = (
        previous is not None
        and old_rows is not None
        and previous_search is not None
        and previous_search.get("kind") == chosen["kind"]
        and previous_search.get("nlist") == chosen["nlist"]
        and previous.d == vectors.shape[1]
    )
    if same:
        assert previous is not None and old_rows is not None and previous_search is not None
        index = faiss.deserialize_index(faiss.serialize_index(previous))  # an owned copy: the loaded one is mapped
        added = _remap(index, old_rows)
        if len(added):
            index.add_with_ids(np.ascontiguousarray(vectors[added]), added.astype(np.int64))
        search = {**previous_search, "updated": True, "added": len(added)}
        search.pop("seconds", None)
    else:
        index = faiss.index_factory(vectors.shape[1], f"IVF{chosen['nlist']},SQ8", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors
        if len(vectors) > chosen["nlist"] * TRAIN_PER_LIST:
            sample = vectors[np.sort(rng.choice(len(vectors), chosen["nlist"] * TRAIN_PER_LIST, replace=False))]
        log.info("training the vector index: %d lists on %d vectors", chosen["nlist"], len(sample))
        index.train(np.ascontiguousarray(sample))
        index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
        calibrated = _calibrate(index, vectors)
        search = {**chosen, "nprobe": calibrated["calibrated_nprobe"], **calibrated, "trained_on": len(sample)}
    if index.ntotal != len(vectors):
        raise IndexStateError(f"the vector index holds {index.ntotal} vectors, not {len(vectors)}")
    faiss.extract_index_ivf(index).nprobe = int(search["nprobe"])
    search["seconds"] = round(time.perf_counter() - started, 3)
    return index, search


def _remap(index: Any, old_rows: np.ndarray) -> np.ndarray:
    """Renumber an IVF index's ids from old rows to new ones; drop the rows not reused.

    Returns the new rows whose vectors are not in the index (to add).
    """
    import faiss

    ivf: Any = faiss.extract_index_ivf(index)
    old_to_new = np.full(ivf.ntotal, -1, dtype=np.int64)  # the previous build's ids are its rows
    reused = np.flatnonzero(old_rows >= 0)
    # One entry per old vector: a text reused by two new rows is added once more for the second.
    first = np.unique(old_rows[reused], return_index=True)[1]
    old_to_new[old_rows[reused[first]]] = reused[first]
    invlists = ivf.invlists
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size)  # the list's own storage
            ids[:] = old_to_new[ids]
    index.remove_ids(faiss.IDSelectorRange(-1, 0))
    kept = np.zeros(len(old_rows), dtype=bool)
    kept[reused[first]] = True
    return np.flatnonzero(~kept)


def _calibrate(index: Any, vectors: np.ndarray) -> dict[str, Any]:
    """The smallest nprobe whose recall@10 reaches RECALL_TARGET, questions being held-out corpus vectors.

    A query vector's own row (and any exact duplicate of it) is left out of
    both result lists, so the test is finding *other* sentences near it, as a
    question does. Recall counts ties: a returned row is right when its exact
    score reaches the exact 10th score.
    """
    import faiss

    ivf = faiss.extract_index_ivf(index)
    rng = np.random.default_rng(1)
    picks = rng.choice(len(vectors), min(CALIBRATION_QUERIES, len(vectors)), replace=False)
    queries = np.ascontiguousarray(vectors[picks])
    k = 10
    tenth = exact_kth(queries, vectors, k, below=0.9999)  # itself and exact duplicates left out
    recall, nprobe = 0.0, 1
    while True:
        ivf.nprobe = nprobe
        # Room for the query itself and its duplicates (a corpus that repeats passages has many)
        _, rows = index.search(queries, k + 64)
        hits = []
        for q, found, t in zip(queries, rows, tenth, strict=True):
            scores = vectors[found[found >= 0]] @ q
            hits.append((scores[scores < 0.9999][:k] >= t - 1e-6).sum() / k)
        recall = float(np.mean(hits))
        if recall >= RECALL_TARGET or nprobe >= ivf.nlist:
            break
        nprobe = min(nprobe * 2, ivf.nlist)
    log.info("vector index: nprobe %d of %d lists, recall@10 %.3f on held-out vectors", nprobe, ivf.nlist, recall)
    return {
        "calibrated_nprobe": nprobe,
        "calibration_recall_at_10": round(recall, 4),
        "calibration_queries": len(queries),
    }


def exact_kth(queries: np.ndarray, vectors: np.ndarray, k: int, below: float = np.inf) -> np.ndarray:
    """Each query's exact k-th best inner product over ``vectors`` (scores >= ``below`` left out).

    Blocks of rows keep memory small at any corpus size; ``vectors`` may be
    memory-mapped float16.
    """
    best = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    for a in range(0, len(vectors), 50_000):
        scores = queries @ np.asarray(vectors[a : a + 50_000], dtype=np.float32).T
        scores[scores >= below] = -np.inf
        keep = min(k, scores.shape[1])
        top = -np.partition(-scores, keep - 1, axis=1)[:, :keep]
        best = np.concatenate([best, top], axis=1)
        if best.shape[1] > k:
            best = -np.partition(-best, k - 1, axis=1)[:, :k]
    if best.shape[1] < k:
        return np.full(len(queries), -np.inf, dtype=np.float32)
    return best.min(axis=1).astype(np.float32)
