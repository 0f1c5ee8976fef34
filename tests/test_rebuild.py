"""Incremental rebuilds: edits, additions, deletions, renames, faults, concurrency and live swaps."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qa import IndexBusyError, build_index, index_status
from qa.answer import Engine
from qa.store import build_lock, current_folder, load_folder

NEWS = {
    "cars.txt": "Toyota sold ten million cars last year. The Corolla remained its best seller.",
    "food/bread.md": "# Bread\n\nSourdough needs a starter culture. It rises slowly overnight.",
    "space.txt": "The probe reached Jupiter in July. Its cameras sent back images of the storms.",
    "birds.txt": "Swifts spend almost their whole lives in the air. They even sleep while flying.",
}


def indexed(index: Path) -> set[tuple[str, int, int, str]]:
    """Every sentence of the live index as (doc, start, end, text)."""
    data = load_folder(current_folder(index))
    return {(s.doc, s.start, s.end, s.text) for s in data.sentences}


def test_editing_one_sentence_reembeds_only_its_texts(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    first = build_index(corpus, index)
    engine = Engine(index, corpus)
    assert "Jupiter" in engine.answer("Which planet did the probe reach?").sources[0].text
    space = corpus / "space.txt"
    space.write_text(space.read_text().replace("Jupiter in July", "Saturn in May"), encoding="utf-8")

    second = build_index(corpus, index)

    r = second.build
    assert (r["added"], r["changed"], r["renamed"], r["removed"], r["unchanged"]) == (0, 1, 0, 0, 3)
    # the edited sentence alone, and the windows of it and its neighbour
    assert (r["embedded"], r["reused"]) == (3, first.vectors - 3)
    assert (r["sentences_embedded"], r["sentences_reused"]) == (2, first.vectors // 2 - 2)
    engine.refresh(wait=True)  # a long-lived engine picks up the new version without a restart
    result = engine.answer("Which planet did the probe reach?")
    assert result.index_version == second.version
    assert "Saturn in May" in result.sources[0].text


def test_added_file_embeds_only_its_sentences(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    first = build_index(corpus, index)
    (corpus / "wind.txt").write_text("Wind farms produced record power this winter.", encoding="utf-8")
    second = build_index(corpus, index)
    r = second.build
    assert (r["added"], r["changed"], r["removed"], r["unchanged"]) == (1, 0, 0, 4)
    assert (r["embedded"], r["reused"], r["sentences_embedded"]) == (2, first.vectors, 1)
    assert Engine(index, corpus).answer("What produced record power?").sources[0].doc == "wind.txt"


def test_deleted_file_leaves_nothing_behind(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    (corpus / "cars.txt").unlink()
    manifest = build_index(corpus, index)
    assert (manifest.build["removed"], manifest.build["embedded"]) == (1, 0)
    data = load_folder(current_folder(index))
    assert "cars.txt" not in data.documents and "cars.txt" not in data.manifest.sources
    assert all(s.doc != "cars.txt" for s in data.sentences)
    assert data.vectors.ntotal == len(data.vector_keys) == 2 * sum(s.citable for s in data.sentences)
    result = Engine(index, corpus).answer("How many cars did Toyota sell?", k=5)
    assert result.sources and all(s.doc != "cars.txt" for s in result.sources)


def test_renamed_file_reuses_every_vector(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    (corpus / "planets").mkdir()
    (corpus / "space.txt").rename(corpus / "planets" / "probe.txt")
    manifest = build_index(corpus, index)
    r = manifest.build
    assert (r["added"], r["renamed"], r["removed"], r["unchanged"], r["embedded"]) == (0, 1, 0, 3, 0)
    result = Engine(index, corpus).answer("Which planet did the probe reach?")
    assert result.sources[0].doc == "planets/probe.txt"
    assert all(doc != "space.txt" for doc, *_ in indexed(index))


def test_incremental_index_equals_a_build_from_scratch(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    (corpus / "birds.txt").write_text(NEWS["birds.txt"].replace("Swifts", "Common swifts"), encoding="utf-8")
    (corpus / "cars.txt").rename(corpus / "vehicles.txt")
    (corpus / "food" / "bread.md").unlink()
    (corpus / "tea.md").write_text("Green tea is steamed soon after picking.", encoding="utf-8")
    build_index(corpus, index)
    build_index(corpus, tmp_path / "scratch")
    mine, scratch = load_folder(current_folder(index)), load_folder(current_folder(tmp_path / "scratch"))
    assert mine.sentences == scratch.sentences
    assert mine.documents == scratch.documents
    assert list(mine.vector_keys) == list(scratch.vector_keys)
    np.testing.assert_allclose(
        mine.vectors.reconstruct_n(0, mine.vectors.ntotal),
        scratch.vectors.reconstruct_n(0, scratch.vectors.ntotal),
        atol=1e-5,
    )
    assert mine.manifest.sources == scratch.manifest.sources


def test_texts_embedded_while_files_are_read_equal_those_embedded_after(
    make_corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On two cores a build embeds new texts beside the split, a chunk at a time; small chunks here.
    import qa.build

    corpus = make_corpus(NEWS)
    after = build_index(corpus, tmp_path / "after")
    monkeypatch.setenv("QA_THREADS", "2")
    monkeypatch.setattr(qa.build, "_EARLY_CHUNK", 2)
    during = build_index(corpus, tmp_path / "during")
    assert during.build["embedded_while_reading"] >= 2 and not after.build.get("embedded_while_reading")
    assert during.build["embedded"] == after.build["embedded"]
    mine, theirs = load_folder(current_folder(tmp_path / "during")), load_folder(current_folder(tmp_path / "after"))
    assert list(mine.vector_keys) == list(theirs.vector_keys)
    np.testing.assert_allclose(
        mine.vectors.reconstruct_n(0, mine.vectors.ntotal),
        theirs.vectors.reconstruct_n(0, theirs.vectors.ntotal),
        atol=1e-6,
    )
    # An edit re-embeds only its texts; the unchanged ones are never handed to the early embedder.
    (corpus / "space.txt").write_text(NEWS["space.txt"].replace("July", "June"), encoding="utf-8")
    edited = build_index(corpus, tmp_path / "during")
    assert edited.build["embedded"] == 3  # the sentence, its window, and the next sentence's window
    assert edited.build["embedded_while_reading"] == 2  # one chunk of 2; the third after the split


def test_no_op_build_says_it_did_nothing(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    first = build_index(corpus, index)
    again = build_index(corpus, index)
    assert again.version == first.version
    assert again.build["noop"] is True and again.build["embedded"] == 0 and again.build["unchanged"] == 4
    assert not first.build.get("noop")


def test_unusable_files_are_skipped_by_name_and_the_index_stays_fresh(
    make_corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = make_corpus(
        {
            **NEWS,
            "binary.txt": bytes(range(256)) * 4,
            "empty.md": "   \n",
            "latin1.txt": "Café owners in Zürich serve crème brûlée.".encode("latin-1"),
        }
    )
    (corpus / "dangling.txt").symlink_to(corpus / "gone.txt")  # unreadable: its target is missing
    index = tmp_path / "index"
    with caplog.at_level(logging.WARNING):
        manifest = build_index(corpus, index)
    assert sorted(manifest.build["skipped"]) == ["binary.txt", "dangling.txt", "empty.md"]
    assert "binary.txt" in caplog.text and "dangling.txt" in caplog.text
    assert manifest.documents == 5
    # Skipped files must not make the index look stale forever.
    assert index_status(corpus, index).state == "fresh"
    assert build_index(corpus, index).build["noop"] is True
    assert Engine(index, corpus).answer("What do cafés in Zürich serve?").sources[0].doc == "latin1.txt"


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="runs as root, which reads files whatever their mode; covered by the next test",
)
def test_permission_denied_file_is_skipped(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({**NEWS, "secret.txt": "The password is swordfish."})
    (corpus / "secret.txt").chmod(0)
    try:
        manifest = build_index(corpus, tmp_path / "index")
    finally:
        (corpus / "secret.txt").chmod(0o644)
    assert manifest.build["skipped"] == ["secret.txt"] and manifest.documents == 4


def test_permission_denied_while_reading_is_skipped(make_corpus, tmp_path: Path, monkeypatch) -> None:
    """The same path as above, for runs as root: the file's bytes cannot be read."""
    corpus = make_corpus({**NEWS, "secret.txt": "The password is swordfish."})
    import qa.corpus

    real_read = qa.corpus.read_source

    def read_source(path, limit):  # type: ignore[no-untyped-def]
        if Path(path).name == "secret.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path, limit)

    monkeypatch.setattr(qa.corpus, "read_source", read_source)
    manifest = build_index(corpus, tmp_path / "index")
    assert manifest.build["skipped"] == ["secret.txt"] and manifest.documents == 4
    assert index_status(corpus, tmp_path / "index").state == "fresh"


def test_corrupted_sentences_file_is_named_and_rebuilt_reusing_vectors(
    make_corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    sentences = current_folder(index) / "sentences" / "start.npy"
    sentences.write_bytes(sentences.read_bytes()[:50])  # truncated
    with caplog.at_level(logging.WARNING):
        result = Engine(index, corpus).answer("Which planet did the probe reach?")
    assert "sentences/start.npy" in caplog.text
    assert "Jupiter" in result.sources[0].text
    manifest = load_folder(current_folder(index)).manifest
    assert manifest.build["embedded"] == 0  # the vectors were intact, so reused


def test_truncated_vectors_file_is_named_and_rebuilt(
    make_corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    first = build_index(corpus, index)
    vectors = current_folder(index) / "vectors.faiss"
    vectors.write_bytes(vectors.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        manifest = build_index(corpus, index)
    assert "vectors.faiss" in caplog.text
    assert manifest.version != first.version and manifest.build["embedded"] == first.vectors
    assert index_status(corpus, index).state == "fresh"


# --- killed builds ---------------------------------------------------------------

# Runs a build in a child process that dies (os._exit, like SIGKILL: no cleanup)
# at one point of writing the new version.
KILL_AT = {
    "writing files": "store._fsync_tree = die",
    "after renaming the folder into place": "store._replace_text = die",
    "while replacing CURRENT": "store.os.replace = die",
}


@pytest.mark.parametrize("stage", list(KILL_AT))
def test_build_killed_at_any_point_leaves_previous_index_usable(stage: str, make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    before = build_index(corpus, index)
    (corpus / "space.txt").rename(corpus / "probe.txt")  # a rename: the child needs no model
    script = textwrap.dedent(
        f"""
        import os, sys
        from qa import build, store
        def die(*args, **kwargs):
            os._exit(9)
        {KILL_AT[stage]}
        build.build_index(sys.argv[1], sys.argv[2])
        """
    )
    child = subprocess.run([sys.executable, "-c", script, str(corpus), str(index)], capture_output=True, text=True)
    assert child.returncode == 9, child.stderr

    assert current_folder(index).name == f"v-{before.version}"
    assert load_folder(current_folder(index)).manifest.version == before.version  # verifies checksums
    assert any(doc == "space.txt" for doc, *_ in indexed(index))

    after = build_index(corpus, index)
    assert after.version != before.version
    assert not list(index.glob(".tmp-*")) and not list(index.glob(".CURRENT.*"))
    assert len(list(index.glob("v-*"))) <= 2
    assert Engine(index).answer("Which planet did the probe reach?").sources[0].doc == "probe.txt"


# --- concurrent builds -------------------------------------------------------------


def _build_cli(spawn, corpus: Path, index: Path, **env: str) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return spawn(
        [
            sys.executable,
            "-m",
            "qa.cli",
            "index",
            "build",
            "--corpus",
            str(corpus),
            "--index",
            str(index),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def test_concurrent_builds_wait_then_the_second_is_a_no_op(make_corpus, tmp_path: Path, spawn) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    before = build_index(corpus, index)
    (corpus / "birds.txt").rename(corpus / "swifts.txt")
    with build_lock(index):  # both builds start while a third holds the lock
        procs = [_build_cli(spawn, corpus, index) for _ in range(2)]
        time.sleep(1.5)
        assert all(p.poll() is None for p in procs), "a build did not wait for the lock"
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    reports = [json.loads(out) for out, _ in outputs]
    assert sorted(bool(r.get("noop")) for r in reports) == [False, True]
    assert reports[0]["version"] == reports[1]["version"] != before.version
    assert load_folder(current_folder(index)).manifest.sources.keys() == {
        "cars.txt", "food/bread.md", "space.txt", "swifts.txt"
    }  # fmt: skip


def test_lock_timeout_gives_a_clear_message(make_corpus, tmp_path: Path, spawn) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    with build_lock(index):
        proc = _build_cli(spawn, corpus, index, QA_LOCK_TIMEOUT="0.5")
        _, err = proc.communicate(timeout=60)
        with pytest.raises(IndexBusyError, match=r"index\.lock"):
            _busy(index)
    assert proc.returncode == 2
    assert "another build" in err and "index.lock" in err and "Traceback" not in err
    assert "waiting for another build" in err  # it said so while it waited


def _busy(index: Path) -> None:
    with build_lock(index, timeout=0.1):
        pass


# --- swapping while answering --------------------------------------------------------


def test_swap_while_questions_are_asked_in_threads(make_corpus, tmp_path: Path) -> None:
    codes = ["amber", "cobalt", "crimson", "indigo"]
    corpus = make_corpus({**NEWS, "vault.txt": f"The vault access code is {codes[0]}. Guards change it weekly."})
    index = tmp_path / "index"
    version_of: dict[str, tuple[str, set[tuple[str, int, int, str]]]] = {}
    first = build_index(corpus, index)
    version_of[first.version] = (codes[0], indexed(index))
    engine = Engine(index, corpus)
    engine.answer("What is the vault access code?")  # loaded before the threads start

    answers, errors = [], []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                answers.append(engine.answer("What is the vault access code?", k=3))
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for code in codes[1:]:
            (corpus / "vault.txt").write_text(
                f"The vault access code is {code}. Guards change it weekly.", encoding="utf-8"
            )
            manifest = build_index(corpus, index)
            version_of[manifest.version] = (code, indexed(index))
            # Before the next build, wait until the threads' questions have swapped
            # the engine to this version and some answer came from it.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(a.index_version == manifest.version for a in answers[-50:]):
                time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()

    assert not errors, errors[:3]
    seen = {a.index_version for a in answers}
    assert seen == set(version_of), "every version should have answered some questions"
    for a in answers:
        code, sentences = version_of[a.index_version]
        assert code in a.sources[0].text
        assert all((s.doc, s.start, s.end, s.text) in sentences for s in a.sources)


def test_engine_status_describes_the_live_index(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    engine = Engine(index, corpus)
    assert engine.status()["version"] is None and engine.status()["state"] == "missing"
    engine.answer("Which planet did the probe reach?")
    status = engine.status()
    assert status["state"] == "fresh" and status["documents"] == 4 and status["swapping"] is False
    assert status["version"] == load_folder(current_folder(index)).manifest.version
    (corpus / "cars.txt").unlink()
    assert engine.status()["state"] == "stale"


def test_cli_build_prints_the_full_report(make_corpus, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from qa.cli import main

    corpus, index = make_corpus(NEWS), str(tmp_path / "index")
    build_index(corpus, index)
    (corpus / "cars.txt").unlink()
    (corpus / "space.txt").rename(corpus / "probe.txt")
    result = CliRunner().invoke(main, ["index", "build", "--corpus", str(corpus), "--index", index, "--json"])
    report = json.loads(result.output)
    assert {k: report[k] for k in ("added", "changed", "renamed", "removed", "unchanged", "embedded")} == {
        "added": 0, "changed": 0, "renamed": 1, "removed": 1, "unchanged": 2, "embedded": 0
    }  # fmt: skip
    assert {
        "version",
        "built_at",
        "documents",
        "sentences",
        "reused",
        "sentences_embedded",
        "seconds",
    } <= set(report)
    again = CliRunner().invoke(main, ["index", "build", "--corpus", str(corpus), "--index", index])
    assert again.exit_code == 0 and "nothing to do: 3 files unchanged" in again.output


def test_a_new_process_finds_unchanged_files_by_stat_and_edits_by_content(
    make_corpus, tmp_path: Path, monkeypatch
) -> None:
    import qa.build
    import qa.store

    corpus, index = make_corpus(NEWS), tmp_path / "index"
    settled = time.time() - 60
    for path in corpus.rglob("*.*"):
        os.utime(path, (settled, settled))
    time.sleep(2.1)  # files changed in the last 2 s (ctime included) are not recorded by stat
    build_index(corpus, index)
    read: list[str] = []
    real_sha = qa.store.sha256_file
    monkeypatch.setattr(qa.store, "sha256_file", lambda p: read.append(Path(p).name) or real_sha(p))

    def new_process() -> None:  # what a new process knows
        monkeypatch.setattr(qa.build, "_hashes", {})
        monkeypatch.setattr(qa.build, "_recalled", {})

    new_process()
    assert index_status(corpus, index, verify=False).fresh
    assert read == []  # 10k unchanged files cost a stat each, not a read
    # Same size, and the old mtime put back (as cp -p or touch -r do): found by its changed ctime.
    (corpus / "space.txt").write_text(NEWS["space.txt"].replace("July", "Juno"))
    os.utime(corpus / "space.txt", (settled, settled))
    new_process()
    status = index_status(corpus, index, verify=False)
    assert status.changed == ["space.txt"] and read == ["space.txt"]


def test_damaged_file_stats_in_the_manifest_only_cost_a_read(make_corpus, tmp_path: Path, monkeypatch) -> None:
    import qa.build

    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    path = current_folder(index) / "manifest.json"
    damage = {"space.txt": [1, 2], "nowhere.txt": [1, 2, 3, 4], "cars.txt": "big"}
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), "stats": damage}), encoding="utf-8")
    monkeypatch.setattr(qa.build, "_hashes", {})
    monkeypatch.setattr(qa.build, "_recalled", {})
    assert index_status(corpus, index, verify=False).fresh  # files hashed again; nothing rebuilt
    assert build_index(corpus, index).build["noop"] is True
