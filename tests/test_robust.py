"""The hostile-input, fault and load catalogue (issue 10): each case once failed.

Bad questions (Python, CLI; the API ones are in test_app.py), bad sources,
index faults, folder safety and read-your-writes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qa import Engine, IndexStateError, QuestionError, build_index, index_status
from qa.corpus import MAX_FILE_BYTES, MAX_SPLIT_CHARS, split_document
from qa.store import current_folder
from qa.types import Document

NEWS = {
    "cars.txt": "Toyota sold ten million cars last year. The Corolla remained its best seller.",
    "space.txt": "The probe reached Jupiter in July. Its cameras sent back images of the storms.",
    "birds.txt": "Swifts spend almost their whole lives in the air. They even sleep while flying.",
}


def qa_cli(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], capture_output=True, env=os.environ)


# --- bad questions ------------------------------------------------------------------


@pytest.mark.parametrize("question", ["Who is Carlos \udcff Ghosn?", "lone \ud800 surrogate"])
def test_question_that_is_not_valid_text_is_a_question_error(question: str, tmp_path: Path) -> None:
    engine = Engine(tmp_path / "never-built")
    with pytest.raises(QuestionError, match="not valid text"):
        engine.answer(question)
    with pytest.raises(QuestionError, match="not valid text"):
        engine.answer("Where is it built?", history=[question])
    assert not (tmp_path / "never-built").exists()  # rejected before the index is touched


def test_cli_question_with_an_undecodable_byte_is_one_sentence_exit_2(article_index: Path) -> None:
    result = qa_cli("ask", b"Who is Carlos \xff Ghosn?", "--index", str(article_index))
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "not valid text" in err and "Traceback" not in err


# --- bad sources ----------------------------------------------------------------------


def test_unpunctuated_text_is_split_in_bounded_pieces_with_exact_offsets() -> None:
    # 100 KB without sentence punctuation once took 8.7 s (pysbd is quadratic on it); 1 MB ~15 minutes.
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda"]
    text = " ".join(words[i % len(words)] for i in range(10_000))  # one 60 KB line
    passages, sentences = split_document(Document("log.txt", text, "0" * 64))
    assert len(passages) == 1 and sentences
    assert max(s.end - s.start for s in sentences) <= MAX_SPLIT_CHARS
    for s in sentences:
        assert text[s.start : s.end] == s.text
    covered = sum(len(s.text.split()) for s in sentences)
    assert covered == len(text.split())  # every word is in exactly one sentence


def test_one_line_without_spaces_is_cut_too() -> None:
    text = "x" * (3 * MAX_SPLIT_CHARS + 17)
    _, sentences = split_document(Document("blob.txt", text, "0" * 64))
    assert "".join(s.text for s in sentences) == text
    assert max(len(s.text) for s in sentences) <= MAX_SPLIT_CHARS


def test_prose_long_paragraph_is_still_split_at_sentences() -> None:
    sentence = "The ferry leaves the harbour at noon every day of the week. "
    text = sentence * 200  # 12 KB, no blank line
    _, sentences = split_document(Document("ferry.txt", text, "0" * 64))
    assert {s.text for s in sentences} == {sentence.strip()}


def test_a_megabyte_line_builds_and_its_splitting_is_logged(
    make_corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Once about 15 minutes of splitting, holding the build lock, with nothing logged.
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    line = " ".join(words[i % len(words)] for i in range(190_000))  # 1.1 million characters, one line
    corpus = make_corpus({**NEWS, "line.txt": line})
    with caplog.at_level(logging.INFO, logger="qa"):
        manifest = build_index(corpus, tmp_path / "index")
    assert manifest.documents == 4
    assert "splitting line.txt (1.0 M characters)" in caplog.text


def test_file_over_the_size_limit_is_skipped_by_name(
    make_corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = make_corpus(NEWS)
    with (corpus / "huge.txt").open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with caplog.at_level(logging.WARNING):
        manifest = build_index(corpus, tmp_path / "index")
    assert manifest.build["skipped"] == ["huge.txt"]
    assert "file size limit" in manifest.build["skipped_reasons"]["huge.txt"]
    assert "huge.txt" in caplog.text and "file size limit" in caplog.text
    assert manifest.documents == 3


def test_utf16_and_utf32_with_bom_are_read_and_empty_is_called_empty(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(
        {
            **NEWS,
            "notepad.txt": "\ufeffThe lighthouse keeper lives on the northern island.".encode("utf-16-le"),
            "utf16be.txt": "\ufeffThe glacier moved four metres last winter.".encode("utf-16-be"),
            "utf32.txt": "The kiln fires pottery at 1,200 degrees.".encode("utf-32"),
            "empty.txt": b"",
        }
    )
    index = tmp_path / "index"
    manifest = build_index(corpus, index)
    assert manifest.build["skipped"] == ["empty.txt"]
    assert manifest.build["skipped_reasons"] == {"empty.txt": "empty"}
    engine = Engine(index, corpus)
    for question, doc in [
        ("Where does the lighthouse keeper live?", "notepad.txt"),
        ("How far did the glacier move?", "utf16be.txt"),
        ("How hot does the kiln fire pottery?", "utf32.txt"),
    ]:
        top = engine.answer(question).sources[0]
        assert top.doc == doc
        text = engine.retriever().data.documents[doc].text
        assert text[top.start : top.end] == top.text and not text.startswith("\ufeff")
    out = qa_cli("index", "build", "--corpus", str(corpus), "--index", str(index), "--force").stdout.decode()
    assert "skipped empty.txt: empty" in out and "unreadable" not in out


def test_unlistable_folder_is_named(make_corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = make_corpus(NEWS)
    # A folder path past the system's length limit (PATH_MAX, 4,096 bytes on Linux) cannot be listed.
    fd = os.open(corpus, os.O_RDONLY)
    try:
        for _ in range(24):
            os.mkdir("d" * 200, dir_fd=fd)
            child = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
            f.write("The deep file says nothing useful.")
    finally:
        os.close(fd)
    with caplog.at_level(logging.WARNING):
        manifest = build_index(corpus, tmp_path / "index")
    assert manifest.documents == 3
    assert "cannot list this folder" in caplog.text and "ddd" in caplog.text


def test_symlink_out_of_the_corpus_is_warned_about_once(
    make_corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("The password is swordfish.", encoding="utf-8")
    corpus = make_corpus(NEWS)
    (corpus / "link.txt").symlink_to(outside)
    from qa.corpus import corpus_files

    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert "link.txt" not in {doc for doc, _ in corpus_files(corpus)}
    assert caplog.text.count("symlink points outside the corpus") == 1


# --- index faults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        {"files": None},
        {"sources": []},
        {"build": {"skipped": None}},
        {"sentences": "many"},
        {"dimension": True},
    ],
)
def test_manifest_with_wrong_types_is_corrupted_and_rebuilt(damage: dict, make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    path = current_folder(index) / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **damage}), encoding="utf-8")
    status = index_status(corpus, index)
    assert status.state == "corrupted" and "manifest.json" in status.reason
    cli = qa_cli("index", "status", "--corpus", str(corpus), "--index", str(index))
    assert cli.returncode == 1 and b"corrupted" in cli.stdout and b"Traceback" not in cli.stderr
    rebuilt = build_index(corpus, index)
    assert index_status(corpus, index).fresh and rebuilt.documents == 3
    assert Engine(index, corpus).answer("Which planet did the probe reach?").sources[0].doc == "space.txt"


def test_ask_with_a_damaged_manifest_rebuilds(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    path = current_folder(index) / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), "files": None}), encoding="utf-8")
    env = {**os.environ, "QA_CORPUS": str(corpus)}
    result = subprocess.run(
        [sys.executable, "-m", "qa.cli", "ask", "Which planet did the probe reach?", "--index", str(index)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "space.txt" in result.stdout and "Traceback" not in result.stderr


# --- folder safety ------------------------------------------------------------------------


def test_building_into_a_users_folder_is_refused_and_touches_nothing(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(NEWS)
    mine = tmp_path / "my-documents"
    (mine / ".tmp-drafts").mkdir(parents=True)
    (mine / ".tmp-drafts" / "draft.txt").write_text("my draft", encoding="utf-8")
    (mine / "v-0001-backup").mkdir()
    (mine / "notes.txt").write_text("my notes", encoding="utf-8")
    before = sorted(p.relative_to(mine).as_posix() for p in mine.rglob("*"))
    with pytest.raises(IndexStateError, match="not empty and is not a qa index"):
        build_index(corpus, mine)
    assert sorted(p.relative_to(mine).as_posix() for p in mine.rglob("*")) == before
    cli = qa_cli("index", "build", "--corpus", str(corpus), "--index", str(mine))
    assert cli.returncode == 2 and b"not a qa index" in cli.stderr and b"Traceback" not in cli.stderr
    assert sorted(p.relative_to(mine).as_posix() for p in mine.rglob("*")) == before


def test_an_index_deletes_only_what_it_created(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    # A user's folders that look like the index's own names, put in the index folder.
    (index / ".tmp-drafts").mkdir()
    (index / ".tmp-drafts" / "draft.txt").write_text("my draft", encoding="utf-8")
    (index / "v-0001-backup").mkdir()
    (index / "v-0001-backup" / "manifest.json").write_text("{}", encoding="utf-8")
    for n in range(4):
        (corpus / "cars.txt").write_text(f"Toyota sold {n} cars.", encoding="utf-8")
        build_index(corpus, index)
    assert (index / ".tmp-drafts" / "draft.txt").read_text(encoding="utf-8") == "my draft"
    assert (index / "v-0001-backup" / "manifest.json").exists()
    assert len([p for p in index.glob("v-2*")]) == 2  # old versions of its own are still pruned


def test_index_made_by_the_previous_release_is_still_an_index(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    first = build_index(corpus, index)
    (index / ".qa-index").unlink()  # the previous release wrote no marker
    (corpus / "cars.txt").unlink()
    second = build_index(corpus, index)
    assert second.version != first.version and second.documents == 2
    assert (index / ".qa-index").is_file()


def test_the_projects_own_index_folder_is_an_index() -> None:
    # A fresh clone's index/ holds only README.md and the marker: `make run` must build there.
    from qa.store import is_index

    from .conftest import ROOT

    assert is_index(ROOT / "index")


def test_empty_existing_folder_is_fine(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    index.mkdir()
    assert build_index(corpus, index).documents == 3


# --- read-your-writes ------------------------------------------------------------------------

PROBE = "Which planet did the probe reach?"


def test_a_build_in_this_process_is_seen_by_the_next_answer(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    engine = Engine(index, corpus)
    assert engine.answer(PROBE).sources[0].doc == "space.txt"
    (corpus / "space.txt").unlink()
    manifest = build_index(corpus, index)
    result = engine.answer(PROBE, k=5)
    assert result.index_version == manifest.version
    assert "space.txt" not in {s.doc for s in result.sources}


def test_a_build_by_another_process_is_seen_by_the_next_answer(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    build_index(corpus, index)
    engine = Engine(index, corpus)
    assert engine.answer(PROBE).sources[0].doc == "space.txt"
    (corpus / "space.txt").unlink()
    built = qa_cli("index", "build", "--corpus", str(corpus), "--index", str(index), "--json")
    assert built.returncode == 0, built.stderr
    version = json.loads(built.stdout)["version"]
    result = engine.answer(PROBE, k=5)
    assert result.index_version == version
    assert "space.txt" not in {s.doc for s in result.sources}


def test_a_version_that_fails_to_load_is_not_waited_for_again(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus(NEWS), tmp_path / "index"
    first = build_index(corpus, index)
    engine = Engine(index, corpus)
    engine.answer(PROBE)
    (corpus / "cars.txt").write_text("Toyota sold eleven million cars.", encoding="utf-8")
    second = build_index(corpus, index)
    (current_folder(index) / "sentences" / "start.npy").write_text("garbage", encoding="utf-8")
    result = engine.answer(PROBE)  # the new version cannot load: answered from the one that works
    assert result.index_version == first.version != second.version
    assert engine.answer(PROBE).index_version == first.version


# --- messages ----------------------------------------------------------------------------------


def test_cli_build_is_quiet_and_a_newline_in_a_file_name_stays_on_one_line(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus({"two\nlines.txt": NEWS["space.txt"], "cars.txt": NEWS["cars.txt"]}), tmp_path / "i"
    built = qa_cli("index", "build", "--corpus", str(corpus), "--index", str(index))
    assert built.returncode == 0 and built.stderr == b""  # nothing logged at default verbosity (bm25s was)
    asked = qa_cli("ask", PROBE, "--index", str(index))
    lines = asked.stdout.decode().splitlines()
    assert "[1] two\\nlines.txt chars 0-34 (score" in lines[lines.index("Sources:") + 1], lines


def test_ask_with_a_new_index_folder_says_it_is_building_one(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(NEWS)
    env = {**os.environ, "QA_CORPUS": str(corpus)}
    result = subprocess.run(
        [sys.executable, "-m", "qa.cli", "ask", PROBE, "--index", str(tmp_path / "typo")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 0 and "space.txt" in result.stdout
    assert f"no index in {tmp_path / 'typo'}; building one from {corpus}" in result.stderr
