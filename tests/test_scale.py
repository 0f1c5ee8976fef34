"""Large-corpus machinery on small corpora: approximate search forced on, format migration, shared read-only index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from qa.answer import Engine
from qa.build import build_index, index_status
from qa.store import FORMAT_VERSION, current_folder, load_folder, sha256_file
from qa.types import IndexStateError

TOWNS = [
    ("Ostrava Bay", 1721, "Danish traders", 14000, "dried herring", "Ellen Sand", "granite", "Lune", "March",
     "kites", "green", 40, "brass telescopes", 3),
    ("Millford", 1803, "Welsh miners", 8200, "copper wire", "Tom Ashe", "oak", "Dart", "June", "cheese",
     "red", 12, "steam engines", 2),
    ("Karsk", 1650, "Swedish monks", 22000, "pine timber", "Ida Brun", "iron", "Volta", "August", "lanterns",
     "blue", 95, "painted sledges", 4),
    ("Port Alder", 1899, "railway workers", 5100, "canned salmon", "Raj Patel", "stone", "Alder", "October",
     "apples", "white", 7, "ship models", 6),
    ("Vellmar", 1544, "Flemish weavers", 31000, "woollen cloth", "Greta Holm", "brick", "Sorn", "May", "tulips",
     "yellow", 230, "medieval looms", 1),
    ("Dunmore", 1762, "Scottish farmers", 3900, "whisky barrels", "Ewan Reid", "rope", "Tay", "September",
     "bagpipes", "purple", 18, "curling stones", 5),
    ("Sel Harbour", 1930, "fishing families", 2600, "sea salt", "Nora Lind", "steel", "Sel", "July", "boats",
     "orange", 64, "diving helmets", 8),
    ("Brackwater", 1688, "Dutch engineers", 17500, "windmill sails", "Pieter Vos", "wooden", "Brack",
     "April", "kites and windmills", "black", 150, "clockwork toys", 3),
]  # fmt: skip


def town_text(t: tuple) -> str:  # type: ignore[type-arg]
    town, year, people, pop, export, mayor, material, river, month, fest, color, n, item, hours = t
    return (
        f"{town}\n\n"
        f"{town} was founded in {year} by {people}. The population of {town} is about {pop:,} people. "
        f"Its main export is {export}, shipped from the harbour. "
        f"The mayor of {town}, {mayor}, was elected after a close vote.\n\n"
        f"A {material} bridge crosses the {river} river in the town centre. "
        f"Every {month} the town holds a festival of {fest}. "
        f"The local football club plays in {color} shirts. "
        f"The museum of {town} displays {n} {item}. "
        f"Trains to the capital leave every {hours} hours.\n"
    )


CORPUS = {f"{t[0].lower().replace(' ', '-')}.txt": town_text(t) for t in TOWNS}
QUESTIONS = [
    ("Who is the mayor of Karsk?", "Ida Brun"),
    ("What does Millford export?", "copper wire"),
    ("When was Vellmar founded?", "1544"),
    ("What colour shirts does the Dunmore football club wear?", "purple"),
    ("How many diving helmets does the museum of Sel Harbour display?", "64 diving helmets"),
    ("Which river flows through Port Alder?", "Alder river"),
]


@pytest.fixture
def ivf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_ANN", "ivf")


def tie_aware_recall(data, query: np.ndarray, k: int = 10) -> float:  # type: ignore[no-untyped-def]
    exact = np.asarray(data.matrix, dtype=np.float32) @ query
    tenth = np.sort(exact)[-k]
    _, rows = data.vectors.search(query.reshape(1, -1), k)
    found = rows[0][rows[0] >= 0]
    return float((exact[found] >= tenth - 1e-6).sum() / k)


def test_forced_approximate_search_agrees_with_exact_search(make_corpus, tmp_path: Path, monkeypatch) -> None:
    corpus = make_corpus(CORPUS)
    monkeypatch.setenv("QA_ANN", "exact")
    exact_engine = Engine(tmp_path / "exact", corpus)
    exact_answers = [exact_engine.answer(q).sources[0].text for q, _ in QUESTIONS]
    monkeypatch.setenv("QA_ANN", "ivf")
    manifest = build_index(corpus, tmp_path / "ivf")
    assert manifest.search["kind"] == "ivf-sq8" and manifest.search["nlist"] > 1
    assert 1 <= manifest.search["nprobe"] <= manifest.search["nlist"]
    engine = Engine(tmp_path / "ivf", corpus)
    retriever = engine.retriever()
    data = retriever.data
    assert type(data.vectors).__name__.startswith("IndexIVF")
    for (question, gold), expected in zip(QUESTIONS, exact_answers, strict=True):
        answer = engine.answer(question)
        assert answer.sources[0].text == expected and gold in answer.sources[0].text
        assert tie_aware_recall(data, retriever.embed(question)) >= 0.9


def test_removed_sentences_are_never_returned_after_an_incremental_rebuild(make_corpus, tmp_path: Path, ivf) -> None:
    corpus, index = make_corpus(CORPUS), tmp_path / "index"
    first = build_index(corpus, index)
    (corpus / "karsk.txt").unlink()
    millford = corpus / "millford.txt"
    millford.write_text(millford.read_text(encoding="utf-8").replace("copper wire", "glass marbles"), encoding="utf-8")
    second = build_index(corpus, index)
    assert second.search.get("updated") is True  # the IVF lists were renumbered, not trained again
    assert second.build["reused"] > 0 and second.vectors < first.vectors
    data = load_folder(current_folder(index))  # type: ignore[arg-type]
    assert data.vectors.ntotal == len(data.vector_sentence) == second.vectors
    engine = Engine(index, corpus)
    retriever = engine.retriever()
    for question in ("Who is the mayor of Karsk?", "Ida Brun was elected mayor.", "What does Millford export?"):
        # every row the IVF index returns is a sentence of the new index, and none of the removed text
        _, rows = data.vectors.search(retriever.embed(question).reshape(1, -1), data.vectors.ntotal)
        rows = rows[0][rows[0] >= 0]
        assert len(np.unique(rows)) == len(rows) == data.vectors.ntotal
        texts = {data.sentences[int(data.vector_sentence[r])].text for r in rows}
        assert not any("Karsk" in t or "copper wire" in t for t in texts)
        answer = engine.answer(question, k=5)
        assert all(s.doc != "karsk.txt" and "copper wire" not in s.text for s in answer.sources)
    assert "glass marbles" in engine.answer("What does Millford export?").sources[0].text
    # the same index as one built from scratch: every sentence found by its own vector
    for i, s in enumerate(data.sentences):
        if s.citable:
            row = int(np.flatnonzero(np.asarray(data.vector_sentence) == i)[0])
            _, found = data.vectors.search(np.asarray(data.matrix[row : row + 1], dtype=np.float32), 3)
            assert i in {int(data.vector_sentence[r]) for r in found[0] if r >= 0}


def write_format_2(folder: Path) -> None:
    """Rewrite a version folder in the previous release's layout (JSONL, flat FAISS index, JSON keys)."""
    import faiss

    data = load_folder(folder)
    with (folder / "documents.jsonl").open("w", encoding="utf-8") as f:
        for doc_id in data.documents:
            d = data.documents[doc_id]
            f.write(json.dumps(d.__dict__) + "\n")
    with (folder / "sentences.jsonl").open("w", encoding="utf-8") as f:
        for s in data.sentences:
            row = {"doc": s.doc, "start": s.start, "end": s.end, "text": s.text, "passage_start": s.passage_start,
                   "passage_end": s.passage_end, "citable": s.citable}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    flat = faiss.IndexFlatIP(data.manifest.dimension)
    flat.add(np.asarray(data.matrix, dtype=np.float32))
    keys = [k.decode() for k in np.asarray(data.vector_keys).tolist()]
    del data
    kept = {"manifest.json", ".qa-build", "documents.jsonl", "sentences.jsonl"}
    kept |= {"sparse_rows.npy", "vector_sentence.npy"}
    for p in list(folder.rglob("*")):
        if p.is_file() and p.name not in kept and not p.is_relative_to(folder / "bm25"):
            p.unlink()
    faiss.write_index(flat, str(folder / "vectors.faiss"))
    (folder / "vector_keys.json").write_text(json.dumps(keys), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 2
    for name in ("search", "samples"):
        manifest.pop(name)
    manifest["files"] = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", ".qa-build")
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_an_index_of_the_previous_format_is_rebuilt_not_misread(make_corpus, tmp_path: Path, monkeypatch) -> None:
    corpus, index = make_corpus(CORPUS), tmp_path / "index"
    first = build_index(corpus, index)
    old = current_folder(index)
    assert old is not None
    write_format_2(old)
    with pytest.raises(IndexStateError, match="format version 2"):
        load_folder(old)
    status = index_status(corpus, index)
    assert status.state == "stale" and "format version 2" in status.reason

    def unread(*args: object, **kwargs: object) -> None:
        raise AssertionError("a document was read again: the old index's split was not reused")

    monkeypatch.setattr("qa.build.read_document", unread)
    answer = Engine(index, corpus).answer("Who is the mayor of Karsk?")
    assert "Ida Brun" in answer.sources[0].text
    rebuilt = load_folder(current_folder(index)).manifest  # type: ignore[arg-type]
    assert rebuilt.format_version == FORMAT_VERSION and rebuilt.version != first.version
    assert rebuilt.build["embedded"] == 0 and rebuilt.build["reused"] == first.vectors  # its vectors were reused


def test_an_index_of_the_previous_format_is_rebuilt_from_its_own_corpus(make_corpus, tmp_path: Path) -> None:
    # Asked with no corpus given (``qa ask --index DIR``), the rebuild reads the corpus the
    # index was built from, not ./corpus or $QA_CORPUS.
    corpus, index = make_corpus(CORPUS), tmp_path / "index"
    build_index(corpus, index)
    old = current_folder(index)
    assert old is not None
    write_format_2(old)
    answer = Engine(index).answer("Who is the mayor of Karsk?")
    assert "Ida Brun" in answer.sources[0].text
    rebuilt = load_folder(current_folder(index)).manifest  # type: ignore[arg-type]
    assert rebuilt.format_version == FORMAT_VERSION and Path(rebuilt.corpus) == corpus.resolve()


def test_the_loaded_index_is_read_only_and_shared_by_threads(make_corpus, tmp_path: Path, ivf) -> None:
    corpus, index = make_corpus(CORPUS), tmp_path / "index"
    build_index(corpus, index)
    engine = Engine(index, corpus)
    data = engine.retriever().data
    for array in (data.matrix, data.centrality, data.vector_sentence, data.vector_keys, data.sparse_rows):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = array[1]
    with pytest.raises(TypeError):
        data.sentences[0] = data.sentences[1]  # type: ignore[index]
    expected = {q: engine.answer(q, k=3).to_dict() for q, _ in QUESTIONS}
    results: list[tuple[str, dict]] = []  # type: ignore[type-arg]

    def ask(offset: int) -> None:
        for i in range(12):
            q = QUESTIONS[(i + offset) % len(QUESTIONS)][0]
            results.append((q, engine.answer(q, k=3).to_dict()))

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 72 and all(r == expected[q] for q, r in results)


def test_two_processes_answer_from_one_index(make_corpus, tmp_path: Path, ivf) -> None:
    corpus, index = make_corpus(CORPUS), tmp_path / "index"
    build_index(corpus, index)
    expected = Engine(index, corpus).answer(QUESTIONS[0][0]).to_dict()
    env = {**os.environ, "QA_CORPUS": str(corpus)}
    command = [sys.executable, "-m", "qa.cli", "ask", QUESTIONS[0][0], "--index", str(index), "--json"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out) == expected
