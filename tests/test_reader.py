"""The reader: the shipped file, the answer phrase it finds, SQuAD's phrase metrics, and its training command."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa.eval import exact_match, f1_score, normalize_answer, phrase_scores
from qa.reader import DEFAULT_READER, best_span, load_reader, trim
from qa.squad import load_squad, with_articles_of
from qa.verify import VerifierError
from tests.squad_tiny import write_tiny_squad

ROOT = Path(__file__).resolve().parent.parent
# Recorded when qa/models/reader-int8.onnx was shipped (see qa/models/reader.md).
SHIPPED_SHA256 = "7a307d7794f7bd961b405387a084d951d808e49669d858e3095b56748d8ed3b1"

SOLD = "Mitsubishi Motors sold about 280,000 vehicles in Southeast Asia last fiscal year, more than Nissan or Renault."
STAKE = "Nissan became Mitsubishi Motors’ top shareholder in 2016, taking a 34% stake."
STRONG = "He apparently has decided that Mitsubishi Motors is now strong enough to contribute."


def test_shipped_reader_matches_its_checksum_and_card() -> None:
    assert hashlib.sha256(DEFAULT_READER.read_bytes()).hexdigest() == SHIPPED_SHA256
    assert DEFAULT_READER.with_name("reader-int8.onnx.sha256").read_text().split()[0] == SHIPPED_SHA256
    assert DEFAULT_READER.stat().st_size <= 25 * 1024 * 1024
    info = json.loads(DEFAULT_READER.with_name("reader.json").read_text())
    assert info["base"].startswith("all-MiniLM-L6-v2") and info["outputs"] == ["logit", "start", "end"]
    card = DEFAULT_READER.with_name("reader.md").read_text()
    assert SHIPPED_SHA256 in card and "CC BY-SA 4.0" in card and "squad-v1.1-train" in card


def test_reader_finds_the_answer_sentence_and_the_phrase_in_it() -> None:
    reader = load_reader()
    question = "How many vehicles did Mitsubishi sell in Southeast Asia?"
    readings = reader.read(question, [STAKE, SOLD, STRONG], ["", "", ""])
    logits = [r.logit for r in readings]
    assert int(np.argmax(logits)) == 1 and logits[1] > 0 > max(logits[0], logits[2])
    a, b = readings[1].phrase
    assert "280,000" in SOLD[a:b] and len(SOLD[a:b]) < 40
    stake = reader.read("What share of Mitsubishi did Nissan take?", [STAKE])[0]
    assert STAKE[stake.phrase[0] : stake.phrase[1]].startswith("34%")
    # the verifier's contract: one logit per sentence, the same as read() gives
    assert reader.scores(question, [STAKE, SOLD, STRONG], ["", "", ""]).tolist() == pytest.approx(logits, abs=1e-5)


def test_reader_says_an_off_topic_question_is_not_answered() -> None:
    reader = load_reader()
    assert reader.scores("What is the capital of France?", [SOLD, STAKE, STRONG]).max() < 0


def test_reader_loads_offline_without_torch_and_a_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    code = (
        "import sys; from qa.reader import load_reader; load_reader().read('Who?', ['Nobody did.']); "
        "print([m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules])"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    bad = tmp_path / "reader-int8.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(VerifierError, match="cannot load"):
        load_reader(bad)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(min_size=1, max_size=80),
    logits=st.lists(st.floats(-20, 20, allow_nan=False), min_size=2, max_size=80),
    data=st.data(),
)
def test_a_phrase_span_always_lies_inside_its_sentence(text: str, logits: list[float], data: st.DataObject) -> None:
    # tokens: consecutive character ranges of the sentence, some of them not the sentence's (allowed False)
    n = min(len(logits), len(text))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(text)), min_size=n, max_size=n)) | {len(text)})
    offsets = list(zip([0, *cuts[:-1]], cuts, strict=True))
    allowed = np.array(data.draw(st.lists(st.booleans(), min_size=len(offsets), max_size=len(offsets))))
    start = np.array((logits * 2)[: len(offsets)], dtype=np.float32)
    end = np.array(list(reversed(logits * 2))[: len(offsets)], dtype=np.float32)
    found = best_span(start, end, offsets, allowed)
    if not allowed.any():
        assert found is None
        return
    assert found is not None
    (a, b), p = found
    assert 0 <= a < b <= len(text) and 0.0 <= p <= 1.0 + 1e-9
    a2, b2 = trim(text, a, b)
    assert a <= a2 <= b2 <= b
    if a2 < b2:
        assert text[a2:b2] == text[a2:b2].strip()


def test_the_phrase_and_its_probability_match_hand_computed_values() -> None:
    # Three tokens "a b c": start favours "a", end favours "c"; p(start=a) = p(end=c) = e^2 / (e^2 + 2).
    offsets = [(0, 1), (2, 3), (4, 5)]
    start, end = np.array([2.0, 0.0, 0.0]), np.array([0.0, 0.0, 2.0])
    p = np.e**2 / (np.e**2 + 2)
    (span, prob) = best_span(start, end, offsets, np.array([True, True, True]))  # type: ignore[misc]
    assert span == (0, 5) and prob == pytest.approx(p * p)
    # A penalty of 2.5 a token beyond the first: "a" alone (p * 1/(e^2+2)) beats "a b c" (p * p * e^-5).
    (span, prob) = best_span(start, end, offsets, np.array([True, True, True]), per_token=2.5)  # type: ignore[misc]
    assert span == (0, 1) and prob == pytest.approx(p / (np.e**2 + 2))
    # Only the allowed tokens: without "a", starts at "b" and "c" tie (the first is taken), the end is "c".
    (span, prob) = best_span(start, end, offsets, np.array([False, True, True]))  # type: ignore[misc]
    assert span == (2, 5) and prob == pytest.approx(0.5 * np.e**2 / (np.e**2 + 1))
    # An end before its start is never taken: start favours "c" and end "a"; "a" alone and "c" alone tie.
    (span, prob) = best_span(end, start, offsets, np.array([True, True, True]))  # type: ignore[misc]
    assert span == (0, 1) and prob == pytest.approx(p / (np.e**2 + 2))


def test_squad_normalisation_and_scores_match_hand_computed_values() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert exact_match("the 1933.", ["1933"]) == 1.0 and exact_match("1934", ["1933", "in 1935"]) == 0.0
    # "in 1933" vs "1933": precision 1/2, recall 1/1 -> F1 2/3
    assert f1_score("in 1933", ["1933"]) == pytest.approx(2 / 3)
    # best over golds: "red granite" vs "granite" is 2/3, vs "red granite" 1
    assert f1_score("red granite", ["granite", "red granite"]) == 1.0
    # abstention: 0 on an answerable question, 1 on an unanswerable one
    scores = phrase_scores(["red granite", None, None, "Paris"], [["granite"], ["1723"], [], []])
    assert scores == {"exact_match": round(1 / 4, 4), "f1": round((2 / 3 + 0 + 1 + 0) / 4, 4)}


def test_v2_questions_are_asked_of_v1_articles_with_exact_spans(tmp_path: Path) -> None:
    v1 = write_tiny_squad(tmp_path)
    body = json.loads(gzip.decompress(v1.read_bytes()))
    del body["data"][0]["paragraphs"][0]  # v2 holds fewer paragraphs, so its offsets differ from v1's
    para = body["data"][0]["paragraphs"][0]
    para["qas"].append({"id": "x1", "question": "Who is the deputy mayor?", "answers": [], "is_impossible": True})
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps(body))
    data = with_articles_of(load_squad(v2), load_squad(v1))
    assert [a.doc for a in data.articles] == [a.doc for a in load_squad(v1).articles]
    texts = {a.doc: a.text for a in data.articles}
    answerable = [q for q in data.questions if q.answerable]
    assert answerable and all(texts[q.article][a:b] == q.answers[0] for q in answerable for a, b in q.spans[:1])
    impossible = [q for q in data.questions if not q.answerable]
    assert [q.question for q in impossible] == ["Who is the deputy mayor?"]


def test_reader_training_runs_end_to_end_on_a_tiny_slice_and_resumes(tmp_path: Path) -> None:
    squad = write_tiny_squad(tmp_path)
    pairs = tmp_path / "pairs.jsonl.gz"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    made = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "reader_pairs.py"), str(pairs), "--squad", str(squad), "--chats", "2",
         "--mine", str(DEFAULT_READER)],
        capture_output=True, text=True, timeout=600, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    with gzip.open(pairs, "rt") as f:
        rows = [json.loads(line) for line in f]
    gold = [r for r in rows if r["label"] == 1]
    assert gold and all(r["sentence"][r["span"][0] : r["span"][1]] in r["sentence"] for r in gold)
    assert {"paragraph", "retrieved", "mined"} <= {r["kind"] for r in rows}
    # a mined negative is another sentence the shipped reader scores high, never one holding the answer
    answers = {r["question"]: r["sentence"][r["span"][0] : r["span"][1]].lower() for r in gold}
    mined = [r for r in rows if r["kind"] == "mined"]
    assert mined and all(r["label"] == 0 and answers[r["question"]] not in r["sentence"].lower() for r in mined)
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "bench" / "train_reader.py"), str(pairs), "--out", str(out),
               "--layers", "1", "--batch", "8", "--every", "1", "--questions", "12",
               "--unanswerable", "0.5", "--role-swaps"]  # fmt: skip
    # a run cut off after its first steps (--stop-after), then the same command resumes it
    first = subprocess.run([*command, "--stop-after", "2"], capture_output=True, text=True, timeout=600, check=False,
                           env=env)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads((out / "work" / "checkpoint.json").read_text())["step"] == 2
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming at step 2" in done.stderr and "ETA" in done.stderr
    info = json.loads((out / "reader.json").read_text())
    assert info["steps_done"] == info["steps"] > 2 and info["int8_vs_fp32_pearson"] > 0.9
    reader = load_reader(out / "reader-int8.onnx")
    reading = reader.read("When was Harbour Town founded?", ["It was founded in 1723 by Danish traders."])[0]
    assert reading.phrase is None or 0 <= reading.phrase[0] < reading.phrase[1] <= 41


def test_a_training_run_can_start_from_the_shipped_int8_reader_which_it_rebuilds_to_read_as_the_file_does(
    monkeypatch: pytest.MonkeyPatch, article_text: str
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import onnxruntime as ort
    import torch
    import train_reader
    from train_verifier import default_model, tokenizer_for

    weights = train_reader.weights_from_onnx(DEFAULT_READER)  # what --init reader-int8.onnx starts from
    model = train_reader.build_model(default_model(), 6)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})  # every weight, by name
    model.eval()
    sentences = [s.strip() + "." for s in article_text.split(".") if 40 < len(s) < 300][:12]
    questions = ["Who became Mitsubishi's top shareholder?", "What is the capital of France?"]
    pairs = [{"question": q, "sentence": s, "context": "", "label": 0} for q in questions for s in sentences]
    batch = train_reader.encode(tokenizer_for(default_model()), pairs)
    feeds = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    shipped = ort.InferenceSession(str(DEFAULT_READER), providers=["CPUExecutionProvider"]).run(None, feeds)
    with torch.no_grad():
        rebuilt = [t.numpy() for t in model(**{k: torch.from_numpy(v) for k, v in feeds.items()})]
    assert np.corrcoef(shipped[0], rebuilt[0])[0, 1] > 0.99  # the answer logit; the file quantises activations too
    mask = batch["sentence_mask"].astype(bool)
    same_start = np.mean(np.where(mask, shipped[1], -1e4).argmax(1) == np.where(mask, rebuilt[1], -1e4).argmax(1))
    assert same_start >= 0.8  # 0.89 of 288 article pairs; where the sentence does not answer, the span is a near tie


def test_rule_made_unanswerable_questions_swap_a_name_to_one_the_sentence_holds_in_another_role_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import train_reader

    question = "How many vehicles did Mitsubishi sell in 2016?"
    sentence = "In 2016 Mitsubishi sold more vehicles than Nissan in Thailand."
    swapped = "How many vehicles did Nissan sell in 2016?"
    made = {train_reader.unanswerable(question, sentence, ["Honda"], random.Random(s)) for s in range(40)}
    with_roles = {
        train_reader.unanswerable(question, sentence, ["Honda"], random.Random(s), roles=True) for s in range(40)
    }
    assert swapped not in made and "How many vehicles did Honda sell in 2016?" in made
    assert swapped in with_roles and "How many vehicles did Thailand sell in 2016?" in with_roles
    # a name inside a longer name is left alone: "Motors" of "Nissan Motors" is not swapped in or out
    longer = train_reader.single_names("In 2016 Nissan Motors sold more than Mitsubishi.")
    assert longer == {"2016", "Mitsubishi"}


def test_an_answer_leads_with_its_phrase_whose_offsets_give_back_its_text(
    article_index: Path, article_text: str
) -> None:
    from qa.answer import Engine

    result = Engine(article_index).answer("How many vehicles did Mitsubishi sell in Southeast Asia?")
    assert not result.abstained and result.phrase is not None
    top, phrase = result.sources[0], result.phrase
    assert phrase.doc == top.doc and top.start <= phrase.start < phrase.end <= top.end
    assert article_text[phrase.start : phrase.end] == phrase.text
    assert "280,000" in phrase.text and result.text.startswith(phrase.text)
    assert result.to_dict()["phrase"] == {"text": phrase.text, "doc": phrase.doc, "start": phrase.start,
                                          "end": phrase.end, "score": phrase.score}  # fmt: skip


def test_an_off_topic_question_abstains_with_no_phrase(article_index: Path) -> None:
    from qa.answer import Engine

    result = Engine(article_index).answer("What is the capital of France?")
    assert result.abstained and result.phrase is None and result.to_dict()["phrase"] is None
