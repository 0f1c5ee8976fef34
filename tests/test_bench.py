"""Every script in bench/ is cited in docs/benchmarks.md, answers --help, and runs on a tiny input.

Each smoke run is the script's own command with tiny arguments (a corpus, a
zip or a SQuAD file written here, a few questions, one round): it must exit 0
and print its report. The figures themselves come from full runs
(docs/benchmarks.md gives each command).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ARTICLE, ROOT
from tests.squad_tiny import write_tiny_squad

BENCH = ROOT / "bench"
SHARED = ROOT.parent / "shared" / "data"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}

# Where each script's smoke run is: a test below, or the test that already runs it.
SMOKE = {
    "api_latency.py": "test_api_latency_times_both_ways_and_checks_they_agree",
    "app_latency.py": "test_app_latency_serves_and_times_a_few_questions",
    "calibrator_ceiling.py": "test_calibrator_ceiling_fits_each_calibrator_on_a_tiny_squad_file",
    "document_encoder.py": "test_document_encoder_compares_the_models_on_a_few_paragraphs",
    "fault_load.py": "test_fault_load_finds_no_inconsistent_answer_in_a_short_run",
    "hostile_inputs.py": "test_hostile_inputs_reports_the_cheap_cases",
    "latency.py": "test_latency_times_answers_and_a_cold_start",
    "phrase_decoding.py": "test_phrase_decoding_scores_the_shipped_reader_on_a_tiny_squad_file",
    "ray_build.py": "tests/test_ray.py::test_the_build_benchmark_times_local_and_ray_builds_of_a_few_articles",
    "reader_pairs.py": "tests/test_reader.py::test_reader_training_runs_end_to_end_on_a_tiny_slice_and_resumes",
    "rebuild.py": "test_rebuild_edits_one_sentence_and_answers_it",
    "scale.py": "test_scale_builds_rebuilds_and_queries_a_small_corpus",
    "squad_pairs.py": "test_squad_pairs_feed_a_verifier_trained_for_a_few_steps",
    "train_reader.py": "tests/test_reader.py::test_reader_training_runs_end_to_end_on_a_tiny_slice_and_resumes",
    "train_verifier.py": "test_squad_pairs_feed_a_verifier_trained_for_a_few_steps",
    "tune.py": "test_tune_prints_the_grid_and_the_confidence_gap",
}


def run(script: str, *args: object, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    """Run ``bench/SCRIPT ARGS`` from the repository root; its stdout, after checking it exited 0."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *map(str, args)],
        cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def questions(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ARTICLE_QUESTIONS = [
    {"id": "a1", "question": "What percentage of Mitsubishi Motors does Nissan own?", "gold": ["34% stake"]},
    {"id": "a2", "question": "How many vehicles did Mitsubishi Motors sell in Southeast Asia?",
     "gold": ["280,000 vehicles"]},
    {"id": "a3", "question": "What is the capital of Japan?", "gold": None},
]  # fmt: skip


def test_every_script_is_cited_in_the_benchmarks_page_and_smoke_tested() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in BENCH.glob("*.py"))
    assert scripts == sorted(SMOKE), "a script in bench/ needs a smoke test here (or one was removed)"
    assert [s for s in scripts if f"bench/{s}" not in page] == []
    here = {name for name in globals() if name.startswith("test_")}
    for test in SMOKE.values():
        file, _, name = test.rpartition("::")
        assert name in here if not file else f"def {name}(" in (ROOT / file).read_text(encoding="utf-8"), test


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_every_script_answers_help(script: str) -> None:
    assert "usage:" in run(script, "--help", timeout=120)


def test_latency_times_answers_and_a_cold_start(article_index: Path, tmp_path: Path) -> None:
    asked = questions(tmp_path / "q.jsonl", ARTICLE_QUESTIONS[:2])
    out = run("latency.py", "--index", article_index, "--questions", asked, "--rounds", "1", "--cold", "1")
    assert "2 questions" in out and "answer() warm" in out and "ratio of p50s" in out
    assert "`qa ask` whole process" in out and "ratio of medians" in out


def test_tune_prints_the_grid_and_the_confidence_gap(article_index: Path, tmp_path: Path) -> None:
    out = run("tune.py", article_index, questions(tmp_path / "q.jsonl", ARTICLE_QUESTIONS))
    assert out.startswith("top1 top3 follow-ups  fusion window_weight")
    assert "confidence, answerable (2)" in out and "confidence, unanswerable (1)" in out
    assert "midpoint threshold" in out


def test_rebuild_edits_one_sentence_and_answers_it(tmp_path: Path) -> None:
    archive = tmp_path / "bbc.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("bbc/business/001.txt", "Ad sales boost Time Warner profit\n\n"
                   "TimeWarner said fourth quarter sales rose 2% to $11.1bn from $10.9bn. "
                   "Its profits were buoyed by one-off gains.\n")  # fmt: skip
        z.writestr("bbc/sport/001.txt", "Harbour regatta\n\nThe regatta takes place in August. Sixty boats race.\n")
    out = run("rebuild.py", archive, "--workdir", tmp_path / "work")
    assert "corpus: 2 files" in out and "full build:" in out and "no-op rebuild:" in out
    assert "one-sentence rebuild:" in out and "edited sentence answerable right after: yes" in out


def test_app_latency_serves_and_times_a_few_questions(article_index: Path, tmp_path: Path) -> None:
    asked = questions(tmp_path / "q.jsonl", ARTICLE_QUESTIONS[:2])
    start = f"{sys.executable} -m qa.cli serve --index {article_index} --corpus {article_index.parent / 'corpus'}"
    out = run("app_latency.py", "--start", start, "--index", article_index, "--questions", asked, "-n", "2",
              "--clients", "1,2", "--per-client", "1", "--timeout", "120")  # fmt: skip
    assert "start -> first answer" in out and "app via gradio_client, 2 questions" in out
    assert " 2 concurrent clients: 2 answers" in out and "errors 0" in out and "answer() in process" in out


def test_api_latency_times_both_ways_and_checks_they_agree(article_index: Path, tmp_path: Path) -> None:
    asked = questions(tmp_path / "q.jsonl", ARTICLE_QUESTIONS[:2])
    out = run("api_latency.py", "--index", article_index, "--questions", asked, "--rounds", "1")
    assert "answer() in process" in out and "POST /v1/answer (HTTP)" in out and "p50 difference" in out


def test_fault_load_finds_no_inconsistent_answer_in_a_short_run(tmp_path: Path) -> None:
    out = run("fault_load.py", "--clients", "2", "--seconds", "5", "--every", "2", "--stations", "3", "--json",
              "--workdir", tmp_path / "work")  # fmt: skip
    report = json.loads(out)
    assert report["requests"] > 0 and report["rebuilds"] >= 1
    assert report["errors"] == report["inconsistent_with_version"] == report["older_than_last_build"] == 0


def test_hostile_inputs_reports_the_cheap_cases() -> None:
    out = run("hostile_inputs.py", "--json", "--timeout", "120", "--only", "loop", "Markdown")
    loop, spaces = (json.loads(line) for line in out.splitlines())
    assert loop["exit"] == 0 and loop["skipped"][0].startswith("skipped loop.txt: symlink loop")
    assert spaces["outcome"] == "read" and spaces["read_seconds"] < 5


def test_document_encoder_compares_the_models_on_a_few_paragraphs(tmp_path: Path) -> None:
    archive = tmp_path / "bbc.zip"
    lines = [line for line in ARTICLE.read_text(encoding="utf-8").splitlines() if len(line) > 40]
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("bbc/business/001.txt", "\n".join(lines))
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = {"d1": ("Herring", "Herring fishing is the main industry of the port."),
            "d2": ("Railway", "The narrow-gauge railway opened in 1889 to carry copper ore."),
            "d3": ("Lanterns", "About 3,000 paper lanterns are lit on the first night of the festival.")}  # fmt: skip
    with gzip.open(beir / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in docs.items())
    questions(beir / "queries.jsonl", [{"_id": "q1", "text": "When did the railway open?"},
                                       {"_id": "q2", "text": "How many lanterns are lit?"}])  # fmt: skip
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n", encoding="utf-8")
    out = run("document_encoder.py", "--bbc", archive, "--texts", str(min(len(lines), 12)), "--scifact", beir)
    assert "int8 per token (documents)   cosine with fp32" in out and "in a batch against alone: min 1.0" in out
    assert out.count("texts/s") == 4 and out.count("nDCG@10 1.00000") == 2


@pytest.mark.skipif(not (SHARED / "bbc-news" / "bbc-fulltext.zip").is_file(), reason="needs ../shared/data")
def test_scale_builds_rebuilds_and_queries_a_small_corpus(tmp_path: Path) -> None:
    # The first document of each real source, then generated ones; QA_ANN=ivf takes the large-corpus path.
    out = run("scale.py", "--real", "1", "--sentences", "400", "--questions", "8", "--ranked", "2",
              "--workdir", tmp_path / "scale", env={**ENV, "QA_ANN": "ivf"})  # fmt: skip
    assert "real corpus: 3 documents" in out and "generated from real documents' passages" in out
    assert "no-op rebuild:" in out and "one-sentence-edit rebuild:" in out and "'kind': 'ivf-sq8'" in out
    assert "answer, first stage only (QA_RANKER=none), 8 questions" in out and "recall@10 against exact" in out


def test_squad_pairs_feed_a_verifier_trained_for_a_few_steps(tmp_path: Path) -> None:
    from qa.rank import load_verifier

    squad, pairs, out = write_tiny_squad(tmp_path), tmp_path / "pairs.jsonl", tmp_path / "verifier"
    run("squad_pairs.py", pairs, "--squad", squad, "--work", tmp_path / "work", "--chats")
    rows = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines()]
    assert {"gold", "retrieved", "paragraph"} <= {r["kind"] for r in rows}
    assert any(" [SEP] " in r["question"] for r in rows)
    run("train_verifier.py", pairs, "--out", out, "--layers", "1", "--epochs", "1", "--batch", "8", "--limit", "24",
        "--no-eval", "--cpu")  # fmt: skip
    info = json.loads((out / "verifier.json").read_text(encoding="utf-8"))
    assert info["int8_vs_fp32_pearson"] > 0.9
    logits = load_verifier(out / "verifier-int8.onnx").scores("When did the railway open?", ["It opened in 1889."])
    assert len(logits) == 1


def test_phrase_decoding_scores_the_shipped_reader_on_a_tiny_squad_file(tmp_path: Path) -> None:
    squad = write_tiny_squad(tmp_path)
    out = run("phrase_decoding.py", ROOT / "qa" / "models" / "reader-int8.onnx", "base", "len0.1",
              "--squad", squad, "--work", tmp_path / "work", "--questions", 6)  # fmt: skip
    lines = out.splitlines()
    assert lines[0].endswith("each read with the sentence that answers it") and int(lines[0].split()[0]) > 0
    # the tiny file's answers are short names and numbers inside the sentence: the reader finds most
    f1 = {line.split()[0]: float(line.split()[-1]) for line in lines[1:]}
    assert set(f1) == {"base", "len0.1"} and f1["base"] > 0.5


def test_calibrator_ceiling_fits_each_calibrator_on_a_tiny_squad_file(tmp_path: Path) -> None:
    squad = write_tiny_squad(tmp_path)
    out = run("calibrator_ceiling.py", ROOT / "qa" / "models" / "reader-int8.onnx",
              "--squad", squad, "--work", tmp_path / "work", "--folds", 3)  # fmt: skip
    lines = out.splitlines()
    # each question answerable, answer-dropped and off-corpus
    assert lines[0] == "63 examples, 21 answerable (0 without a candidate)"
    assert lines[1].startswith("the reader's choice lacks a name of the question: right ")
    # in the tiny file every right answer holds its answer's text and no off-corpus choice holds one
    holds = lines[2].split(": ")[1].split()
    assert lines[2].startswith("the reader's choice holds a gold answer text") and holds[:2] == ["right", "1.000"]
    assert holds[holds.index("off_corpus") + 1] == "0.000"
    rows = {" ".join(line.split()[:2]): line for line in lines[3:]}
    assert set(rows) == {"reader logistic", "+names logistic", "all logistic", "all trees"}
    for line in rows.values():
        shares = dict(share.rsplit(" ", 1) for share in line.split("abstained: ")[1].split("; "))
        assert list(shares)[:3] == ["answerable", "dropped", "off_corpus"]
        assert all(0.0 <= float(share) <= 1.0 for share in shares.values())
