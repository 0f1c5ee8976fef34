"""The index: FAISS against brute force, round trips, staleness, corruption, crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qa import answer, build_index, index_status
from qa.answer import Engine
from qa.store import current_folder, load_folder

NEWS = {
    "cars.txt": "Toyota sold ten million cars last year. The Corolla remained its best seller.",
    "food/bread.md": "# Bread\n\nSourdough needs a starter culture. It rises slowly overnight.",
    "space.txt": "The probe reached Jupiter in July. Its cameras sent back images of the storms.",
}


def test_faiss_matches_numpy_brute_force(article_index: Path, encoder) -> None:
    data = load_folder(current_folder(article_index))
    n = data.vectors.ntotal
    matrix = data.vectors.reconstruct_n(0, n)
    for question in ("How many vehicles did Mitsubishi sell?", "Who is Carlos Ghosn?"):
        q = encoder.encode([question])[0]
        scores, rows = data.vectors.search(q.reshape(1, -1), n)
        brute = matrix @ q
        np.testing.assert_allclose(scores[0], np.sort(brute)[::-1], rtol=1e-5, atol=1e-5)
        assert rows[0][0] == int(np.argmax(brute))
        assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-4)


def test_save_then_load_gives_identical_results(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(NEWS)
    build_index(corpus, tmp_path / "index")
    first = [answer(q, index=tmp_path / "index", k=3) for q in ("Who reached Jupiter?", "What rises overnight?")]
    engine = Engine(tmp_path / "index")  # a fresh engine loads from disk again
    second = [engine.answer(a.question, k=3) for a in first]
    assert [a.to_dict() for a in first] == [a.to_dict() for a in second]


def test_build_is_a_no_op_when_fresh(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(NEWS)
    first = build_index(corpus, tmp_path / "index")
    again = build_index(corpus, tmp_path / "index")
    assert again.version == first.version
    assert first.documents == 3 and first.build["embedded"] > 0


def test_a_rebuild_walks_the_corpus_and_reads_each_new_file_for_its_hash_once(
    make_corpus, tmp_path: Path, monkeypatch
) -> None:
    import qa.build
    import qa.store

    corpus = make_corpus(NEWS)
    index = tmp_path / "index"
    build_index(corpus, index)
    (corpus / "moon.txt").write_text("The lander touched down near the lunar south pole.", encoding="utf-8")
    walks: list[object] = []
    hashed: list[str] = []
    walk, sha256_file = qa.build.walk_corpus, qa.store.sha256_file
    monkeypatch.setattr(qa.build, "walk_corpus", lambda c: walks.append(c) or walk(c))
    monkeypatch.setattr(qa.store, "sha256_file", lambda p: hashed.append(Path(p).name) or sha256_file(p))
    manifest = build_index(corpus, index)
    # the file written just now is not remembered (its stat may still change), yet it is hashed only once
    assert len(walks) == 1 and hashed.count("moon.txt") == 1
    assert manifest.build["added"] == 1 and answer("Where did the lander touch down?", index=index).sources


def test_stale_index_is_detected_and_rebuilt(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(NEWS)
    index = tmp_path / "index"
    build_index(corpus, index)
    assert index_status(corpus, index).state == "fresh"
    (corpus / "space.txt").write_text("The probe reached Saturn in May.", encoding="utf-8")
    (corpus / "new.txt").write_text("Wind farms produced more power this winter.", encoding="utf-8")
    (corpus / "cars.txt").unlink()
    status = index_status(corpus, index)
    assert status.state == "stale"
    assert (status.added, status.changed, status.removed) == (["new.txt"], ["space.txt"], ["cars.txt"])
    result = Engine(index, corpus).answer("Which planet did the probe reach?")
    assert "Saturn" in result.sources[0].text
    assert all(s.doc != "cars.txt" for s in Engine(index, corpus).answer("Toyota Corolla cars", k=5).sources)


def test_corrupted_index_is_detected_and_rebuilt(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(NEWS)
    index = tmp_path / "index"
    build_index(corpus, index)
    vectors = current_folder(index) / "vectors.faiss"
    raw = bytearray(vectors.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    vectors.write_bytes(bytes(raw))
    status = index_status(corpus, index)
    assert status.state == "corrupted" and "vectors.faiss" in status.reason
    result = Engine(index, corpus).answer("Who reached Jupiter?")
    assert "Jupiter" in result.sources[0].text
    assert index_status(corpus, index).state == "fresh"


def test_truncated_manifest_is_reported_by_name(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(NEWS)
    index = tmp_path / "index"
    build_index(corpus, index)
    manifest = current_folder(index) / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    status = index_status(corpus, index)
    assert status.state == "corrupted" and "manifest.json" in status.reason


def test_killed_build_leaves_previous_index_whole(make_corpus, tmp_path: Path, spawn) -> None:
    sentences = " ".join(f"Fact number {i} says the river {i} is {i * 3} metres deep." for i in range(3000))
    corpus = make_corpus({"small.txt": "The lighthouse keeper lives on the northern island."})
    index = tmp_path / "index"
    before = build_index(corpus, index)
    (corpus / "big.txt").write_text(sentences, encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = spawn(
        [sys.executable, "-m", "qa.cli", "-v", "index", "build", "--corpus", str(corpus), "--index", str(index)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # kill it mid-build: once it has started embedding 3,000 sentences
        if "embedding" in line:
            break
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert current_folder(index).name == f"v-{before.version}"
    data = load_folder(current_folder(index))  # verifies every checksum
    assert data.manifest.version == before.version
    (corpus / "big.txt").unlink()  # the corpus matches the surviving index again
    result = Engine(index).answer("Where does the lighthouse keeper live?")
    assert "northern island" in result.sources[0].text


def test_stale_temp_folders_are_cleaned(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(NEWS)
    index = tmp_path / "index"
    build_index(corpus, index)
    (index / ".tmp-crashed").mkdir()
    (index / ".tmp-crashed" / ".qa-build").write_text("a build that was killed", encoding="utf-8")
    (index / ".tmp-crashed" / "vectors.faiss").write_bytes(b"half")
    build_index(corpus, index, force=True)
    assert not (index / ".tmp-crashed").exists()


def test_missing_corpus_is_a_clear_error(tmp_path: Path) -> None:
    from qa import CorpusError

    with pytest.raises(CorpusError, match="does not exist"):
        build_index(tmp_path / "nope", tmp_path / "index")


def test_broken_current_pointer_is_rebuilt(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(NEWS)
    index = tmp_path / "index"
    build_index(corpus, index)
    (index / "CURRENT").write_text("v-gone\n")
    assert index_status(corpus, index).state == "corrupted"
    assert "Jupiter" in Engine(index, corpus).answer("Who reached Jupiter?").sources[0].text
    assert index_status(corpus, index).state == "fresh"


def test_index_whose_corpus_is_gone_answers_as_built(make_corpus, tmp_path: Path, monkeypatch) -> None:
    import shutil

    corpus = make_corpus(NEWS)
    other = make_corpus({"other.txt": "Completely different text about gardening."}, name="other")
    index = tmp_path / "index"
    built = build_index(corpus, index)
    shutil.rmtree(corpus)
    monkeypatch.setenv("QA_CORPUS", str(other))
    result = answer("Who reached Jupiter?", index=index)
    assert "Jupiter" in result.sources[0].text and result.index_version == built.version


def test_follow_up_never_cites_an_uncitable_neighbour(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({"pets.txt": "Cats purr loudly when they are happy. OK. Dogs bark at strangers at night."})
    engine = Engine(tmp_path / "index", corpus)
    result = engine.answer("Why?", history=["When do cats purr loudly?"], k=5)
    assert all(len(s.text.split()) > 1 for s in result.sources)
