"""The torch-free query path: ONNX encoder agreement, no torch when answering, the encoder recorded in the index."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from qa import build_index, index_status
from qa.embed import DEFAULT_MODEL, get_encoder, model_path
from qa.export import CHECK_TEXTS, export_folder
from qa.progress import eta
from qa.store import current_folder, read_manifest

from .conftest import ARTICLE_ID

HEAVY = ("torch", "transformers", "sentence_transformers")

AWKWARD = [
    *CHECK_TEXTS,
    "",  # nothing at all
    "\u00a0\u200b",  # only a non-breaking and a zero-width space
    "...",
    "ﬁnance ﬀ ligatures and Ünïcödé, 中文字符, emoji 🚗🔋, Ελληνικά",
    " ".join(f"word{i}" for i in range(300)),  # several hundred tokens: truncated at 256
]


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers with the same packaged weights (only the tests and the export load it)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path(DEFAULT_MODEL), device="cpu", local_files_only=True)


def test_onnx_vectors_match_sentence_transformers_on_awkward_texts(reference) -> None:
    ours = get_encoder(DEFAULT_MODEL).encode(AWKWARD, batch_size=5)
    theirs = reference.encode(AWKWARD, normalize_embeddings=True, convert_to_numpy=True)
    cosines = np.sum(ours * theirs, axis=1)
    assert cosines.min() >= 0.9999, dict(zip(AWKWARD, cosines.round(6), strict=True))
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_single_question_and_batch_give_the_same_vector() -> None:
    encoder = get_encoder(DEFAULT_MODEL)
    texts = ["Who is Carlos Ghosn?", "A much longer sentence about the alliance of three carmakers and its plans."]
    batch = encoder.encode(texts * 4)  # padded together with a longer text
    for i, text in enumerate(texts):
        alone = encoder.encode([text])[0]
        assert float(alone @ batch[i]) >= 0.99999


def test_a_question_gets_the_same_vector_alone_and_among_concurrent_ones() -> None:
    # Alone it runs on every core; while others are encoded, on one thread each.
    from concurrent.futures import ThreadPoolExecutor

    encoder = get_encoder(DEFAULT_MODEL)
    question = "Which company did Nissan buy a stake in?"
    alone = encoder.encode([question])[0]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda _: encoder.encode([question])[0], range(32)))
    assert all(float(alone @ v) >= 0.99999 for v in together)


def test_models_run_on_the_cpu_unless_qa_device_asks_for_a_gpu_that_onnxruntime_can_use(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime as ort

    from qa.encoder import _warn_once, providers

    _warn_once.cache_clear()  # each message is warned once a process
    monkeypatch.delenv("QA_DEVICE", raising=False)
    assert providers() == ["CPUExecutionProvider"]
    monkeypatch.setenv("QA_DEVICE", "gpu")
    with caplog.at_level(logging.WARNING, logger="qa.encoder"):
        chosen = providers()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert chosen == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:  # this machine: the CPU build of onnxruntime
        assert chosen == ["CPUExecutionProvider"]
        assert "cannot use CUDA (install onnxruntime-gpu); running on the CPU" in caplog.text
    monkeypatch.setenv("QA_DEVICE", "cuda")  # a typo of "gpu": said, not silently taken for the CPU
    with caplog.at_level(logging.WARNING, logger="qa.encoder"):
        assert providers() == ["CPUExecutionProvider"]
    assert "QA_DEVICE='cuda' is neither 'cpu' nor 'gpu'" in caplog.text


def test_tokenizer_truncates_at_256_with_dynamic_padding(reference) -> None:
    onnx = get_encoder(DEFAULT_MODEL).model
    long_text = " ".join(["alliance"] * 400)
    assert onnx.token_counts([long_text, "Hi", ""]) == [256, 3, 2]
    expected = reference.tokenize([long_text, "Hi", ""])["attention_mask"].sum(1).tolist()
    assert onnx.token_counts([long_text, "Hi", ""]) == expected


def test_export_is_verified_and_described() -> None:
    encoder = get_encoder(DEFAULT_MODEL)
    info = json.loads((export_folder(encoder.export_id) / "export.json").read_text())
    assert info["verification"]["min_cosine"] >= 0.9999
    assert info["max_length"] == 256 and info["pooling"] == "mean"
    assert encoder.describe()["export"] == encoder.export_id


def test_export_builds_the_attention_mask_once_and_drops_the_softmax_guard() -> None:
    # The pruned graph gives the same vectors (the agreement tests above); here, the work it no longer does.
    import onnx

    folder = export_folder(get_encoder(DEFAULT_MODEL).export_id)
    nodes = onnx.load(str(folder / "model.onnx")).graph.node
    masks = [n for n in nodes if n.op_type == "Where" and n.name.endswith("attention/self/Where")]
    assert len(masks) == 1  # one per model, not one per layer
    assert not [n for n in nodes if n.op_type == "IsNaN"]
    assert json.loads((folder / "export.json").read_text())["pruned_nodes"] > 0


def test_a_build_embeds_documents_in_int8_and_questions_stay_fp32(
    reference, make_corpus, tmp_path: Path, article_text: str
) -> None:
    # The export holds a second, int8 model for documents; its file is checked against the recorded checksum.
    from qa.export import MIN_DOCUMENT_COSINE
    from qa.store import load_folder, sha256_file

    encoder = get_encoder(DEFAULT_MODEL)
    folder = export_folder(encoder.export_id)
    documents = json.loads((folder / "export.json").read_text())["documents"]
    assert sha256_file(folder / documents["file"]) == documents["sha256"]
    assert documents["min_cosine_with_fp32"] >= MIN_DOCUMENT_COSINE
    # The index's vectors are the int8 model's: near the fp32 ones, not equal to them.
    corpus = make_corpus({ARTICLE_ID: article_text})
    manifest = build_index(corpus, tmp_path / "index")
    assert manifest.encoder["documents"]["sha256"] == documents["sha256"]
    data = load_folder(current_folder(tmp_path / "index"))
    stored = data.vectors.reconstruct_n(0, data.vectors.ntotal)
    sentence = next(s for s in data.sentences if s.citable)
    int8 = encoder.encode([" ".join(sentence.text.split())], documents=True)[0]
    fp32 = encoder.encode([" ".join(sentence.text.split())])[0]
    assert float(np.max(stored @ int8)) >= 0.99999  # the sentence view was embedded by the int8 model
    assert 0.98 <= float(int8 @ fp32) < 0.99999
    # A text's document vector is its own: the same alone as among longer and shorter batch-mates.
    mates = [article_text[:1500], "Yes.", sentence.text.upper(), "Ein Satz auf Deutsch, mit Umlauten: äöü."]
    batched = encoder.encode([*mates, " ".join(sentence.text.split())] * 2, documents=True)
    np.testing.assert_allclose(batched[[4, 9]], np.stack([int8, int8]), atol=1e-6)
    # Questions: the fp32 model, as sentence-transformers embeds them.
    question = "How many vehicles did Mitsubishi Motors sell in Southeast Asia?"
    theirs = reference.encode([question], normalize_embeddings=True, convert_to_numpy=True)[0]
    assert float(encoder.encode_query(question) @ theirs) >= 0.9999


def test_manifest_records_the_encoder_and_another_export_makes_the_index_stale(
    make_corpus, tmp_path: Path, article_text: str
) -> None:
    corpus = make_corpus({ARTICLE_ID: article_text})
    index = tmp_path / "index"
    manifest = build_index(corpus, index)
    encoder = get_encoder(DEFAULT_MODEL)
    assert manifest.encoder["export"] == encoder.export_id
    assert manifest.encoder["runtime"] == "onnxruntime"
    assert manifest.encoder["onnx_sha256"]
    assert index_status(corpus, index).fresh

    # An index whose manifest names another encoder export is stale, and is rebuilt by it.
    folder = current_folder(index)
    assert folder is not None
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data["encoder"]["export"] = "minilm-r0-0000000000000000"
    path.write_text(json.dumps(data))
    status = index_status(corpus, index, verify=False)
    assert status.state == "stale" and "encoder" in status.reason
    rebuilt = build_index(corpus, index)
    assert rebuilt.encoder["export"] == encoder.export_id
    assert rebuilt.build["embedded"] == rebuilt.vectors  # vectors of another encoder are never reused


def _run_fresh(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_answering_never_imports_torch_transformers_or_sentence_transformers(article_index: Path) -> None:
    done = _run_fresh(
        f"""
        import sys
        from qa import answer
        a = answer("How many vehicles did Mitsubishi sell in Southeast Asia?", index={str(article_index)!r})
        a2 = answer("Where is it built?", history=["Which minivan will Nissan get?"], index={str(article_index)!r})
        assert "280,000" in a.sources[0].text, a
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """,
        article_index.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_qa_ask_never_imports_torch(article_index: Path) -> None:
    done = _run_fresh(
        f"""
        import sys
        from qa.cli import main
        try:
            main(["ask", "Who is Carlos Ghosn?", "--index", {str(article_index)!r}])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """,
        article_index.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_bm25_scores_equal_bm25s(article_index: Path) -> None:
    import bm25s

    from qa.sparse import SparseIndex

    folder = current_folder(article_index)
    assert folder is not None
    ours = SparseIndex.load(folder / "bm25")
    theirs = bm25s.BM25.load(str(folder / "bm25"), allow_pickle=False, show_progress=False, load_corpus=False)
    for question in ["How many vehicles did Mitsubishi sell?", "Renault Nissan alliance alliance", "zzz qqq", ""]:
        tokens = ours.tokenize(question)
        known = [
            t for t in tokens if t in theirs.vocab_dict and theirs.vocab_dict[t] < len(theirs.scores["indptr"]) - 1
        ]
        expected = theirs.get_scores(known) if known else np.zeros(ours.num_docs)
        assert np.allclose(ours.scores(tokens), expected, atol=1e-5)
        # the postings-only path answering uses gives the same scores, for the sentences that have any
        rows, scores = ours.matches(tokens)
        assert list(rows) == list(np.flatnonzero(expected > 0)) and np.allclose(scores, expected[rows], atol=1e-5)


def test_index_names_the_export_used_for_queries(article_index: Path) -> None:
    from qa import get_engine

    folder = current_folder(article_index)
    assert folder is not None
    manifest = read_manifest(folder)
    retriever = get_engine(article_index).retriever()
    assert retriever.encoder.export_id == manifest.encoder["export"]


def test_a_corpus_with_nothing_citable_builds_an_empty_index(make_corpus, tmp_path: Path) -> None:
    from qa import answer

    corpus = make_corpus({"menu.txt": "Home\n\nAbout\n\nContact\n"})  # headings only: nothing citable
    index = tmp_path / "index"
    manifest = build_index(corpus, index)
    assert manifest.documents == 1
    reply = answer("What is on the menu?", index=index)
    assert reply.abstained


def test_a_long_embedding_says_how_long_it_has_left(caplog: pytest.LogCaptureFixture) -> None:
    texts = [f"Sentence number {i} about the alliance's plans for {i % 7} markets." for i in range(120)]
    with caplog.at_level(logging.INFO, logger="qa.encoder"):
        get_encoder(DEFAULT_MODEL).model.encode(texts, batch_size=8, progress=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embedded")]
    assert lines and "of 120 texts" in lines[0] and any("left" in line for line in lines[:-1])
    assert eta(time.perf_counter() - 10, 1, 4) == "about 30 s left"
    assert eta(time.perf_counter() - 60, 1, 3) == "about 2 min 0 s left"
    assert eta(time.perf_counter() - 10, 0, 4) == "" and eta(time.perf_counter() - 10, 4, 4) == ""
