"""Export a sentence-transformers model to ONNX once, verified, into a cache folder.

This is the only module of the query side's encoder that needs torch, and it
runs once per model (per its weights' checksum) per machine: at the first
build, or when an index names an export this machine's cache lacks (then in
a child process, so the answering process never imports torch).

    python -m qa.export [MODEL]      # export (no-op when cached), print the folder

An export folder (``$QA_CACHE/encoders/<export id>/``, default cache
``~/.cache/qa``) holds ``model.onnx`` (the transformer with mean pooling and
L2 normalisation inside the graph: it outputs sentence vectors),
``tokenizer.json`` (truncation and padding set as sentence-transformers
uses them), ``documents-int8.onnx`` (the same graph with its matrix products
in int8, which embeds the documents of a build: about 1.4x the sentences a
second on two cores, each text's vector independent of its batch; questions
are always embedded by ``model.onnx``) and
``export.json`` (what it is, and the verification figures).
The export id is the sha256 of the weights plus this recipe's version, so
another model, other weights or another recipe never share a folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.store import sha256_file
from qa.types import QAError

if TYPE_CHECKING:
    from qa.encoder import OnnxEncoder

log = logging.getLogger(__name__)

# Bump when the export (graph, pooling, tokenizer settings, the document model) changes.
# 3: attention work pruned (prune_attention_ops); 4: the int8 document model (quantise_documents).
# 2 was a per-batch int8 document model, never shipped.
RECIPE = 4
OPSET = 17
MIN_COSINE = 0.9999  # the export must agree with sentence-transformers at least this well
DOCUMENTS_FILE = "documents-int8.onnx"
# The int8 document model against the fp32 one on CHECK_TEXTS: a floor that catches a broken
# quantisation (measured: 0.989, for "?"; without the fp32 channel, 0.974).
MIN_DOCUMENT_COSINE = 0.98

# Awkward texts the export is checked on, beside ordinary ones: empty-ish,
# non-ASCII, longer than the 256-token limit, odd whitespace.
CHECK_TEXTS = [
    "How many vehicles did Mitsubishi sell in Southeast Asia?",
    "Mitsubishi Motors sold about 280,000 vehicles in Southeast Asia last year.",
    "",
    " ",
    "?",
    "Jürgen fährt mit der Straßenbahn durch Tōkyō; Москва и 東京 🚋 — “quoted” text.",
    "  leading and trailing whitespace\tand tabs\n",
    " ".join(["alliance"] * 300),
    "The Renault-Nissan alliance " * 60,
]


class ExportError(QAError):
    """The encoder could not be exported to ONNX or failed its verification."""


def cache_root() -> Path:
    """``$QA_CACHE``, else ``$XDG_CACHE_HOME/qa``, else ``~/.cache/qa``."""
    if os.environ.get("QA_CACHE"):
        return Path(os.environ["QA_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qa"


def weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise ExportError(f"no model weights (model.safetensors) in {folder}")


def weights_sha256(folder: Path) -> str:
    """sha256 of the model's weights, remembered by (path, size, mtime) in the cache folder."""
    path = weights_file(folder).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_root() / "weights-sha256.json"
    known: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(memo.read_text(encoding="utf-8"))
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    digest = sha256_file(path)
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(memo, json.dumps({**(known if isinstance(known, dict) else {}), key: digest}, indent=1))
    return digest


def export_id(folder: Path) -> str:
    """Identity of the export of the model in ``folder``: its weights and this recipe."""
    return f"minilm-r{RECIPE}-{weights_sha256(folder)[:16]}"


def export_folder(eid: str) -> Path:
    return cache_root() / "encoders" / eid


def read_settings(folder: Path) -> dict[str, Any]:
    """The sentence-transformers pipeline settings we reproduce: max length, pooling, normalisation."""
    max_length = 256
    with contextlib.suppress(OSError, ValueError):
        max_length = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    pooling = "mean"
    with contextlib.suppress(OSError, ValueError):
        pool = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if pool.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif not pool.get("pooling_mode_mean_tokens", True):
            raise ExportError(f"{folder}: only mean or CLS pooling can be exported")
    return {"max_length": max_length, "pooling": pooling}


def ensure_export(model_folder: str | os.PathLike[str], *, model_id: str = "") -> Path:
    """The verified export folder of a model; exports (importing torch) when not cached."""
    folder = Path(model_folder)
    target = export_folder(export_id(folder))
    if (target / "export.json").is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "export.json").is_file():  # another process exported it meanwhile
            return target
        log.warning("exporting the encoder %s to ONNX (once per model, about 10 s)", model_id or folder)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            info = _export(folder, tmp)
            info["model_id"] = model_id
            info["export_id"] = target.name
            (tmp / "export.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
            tmp.chmod(0o755)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def ensure_export_in_child(model_folder: str | os.PathLike[str], *, model_id: str = "") -> Path:
    """Like :func:`ensure_export`, but any export runs in a child process (this one stays torch-free)."""
    folder = Path(model_folder)
    target = export_folder(export_id(folder))
    if (target / "export.json").is_file():
        return target
    done = subprocess.run(
        [sys.executable, "-m", "qa.export", str(folder), "--model-id", model_id],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not (target / "export.json").is_file():
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"could not export the encoder {model_id or folder} to ONNX: {detail}")
    return target


def _export(folder: Path, out: Path) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    _quiet_libraries()

    settings = read_settings(folder)
    try:
        bert = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    except Exception as exc:  # any loader failure becomes one clear message
        raise ExportError(f"cannot load the model in {folder}: {exc}") from exc
    cls_pooling = settings["pooling"] == "cls"

    class SentenceVectors(torch.nn.Module):
        """Transformer, then pooling and L2 normalisation, as sentence-transformers does."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            tokens = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            if cls_pooling:
                pooled = tokens[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    wrapper = SentenceVectors().eval()
    dummy = {
        "input_ids": torch.ones((2, 8), dtype=torch.int64),
        "attention_mask": torch.ones((2, 8), dtype=torch.int64),
        "token_type_ids": torch.zeros((2, 8), dtype=torch.int64),
    }
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (),
            str(out / "model.onnx"),
            kwargs=dummy,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "token_type_ids": {0: "batch", 1: "tokens"},
                "sentence_embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    pruned = prune_attention_ops(out / "model.onnx")
    shutil.copy(folder / "tokenizer.json", out / "tokenizer.json")
    info: dict[str, Any] = {
        "recipe": RECIPE,
        "opset": OPSET,
        "weights_sha256": weights_sha256(folder),
        "onnx_sha256": sha256_file(out / "model.onnx"),
        "dimension": int(bert.config.hidden_size),
        "pruned_nodes": pruned,
        **settings,
    }
    (out / "export.json").write_text(json.dumps(info), encoding="utf-8")  # lets the encoder load it
    info["verification"] = verify(folder, out)
    if info["verification"]["min_cosine"] < MIN_COSINE:
        raise ExportError(
            f"the ONNX export disagrees with sentence-transformers (min cosine "
            f"{info['verification']['min_cosine']:.6f} < {MIN_COSINE})"
        )
    info["documents"] = quantise_documents(out)
    return info


def prune_attention_ops(path: Path) -> int:
    """Drop work the exported attention repeats; returns how many nodes went. The outputs do not change.

    The eager-attention export builds the same additive mask in every layer
    (``attention/self/Where`` over identical inputs): later layers now use
    the first layer's. It also guards each softmax against rows with no
    valid key (``Where(IsNaN(p), 0, p)``); no row here has none, since a
    text's ``[CLS]`` and ``[SEP]`` are never masked, so the guard goes. On
    this machine that is about 10% of a batch's time (12% of the kernel time
    was ``Where``), with bit-identical vectors. A graph without these nodes
    is left as it is.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}

    def signature(node: Any) -> tuple[Any, ...]:
        parts = [(constants[i].dtype.str, constants[i].tobytes()) if i in constants else i for i in node.input]
        return (node.op_type, tuple(parts))

    rename: dict[str, str] = {}
    first_mask: dict[tuple[Any, ...], str] = {}
    kept = []
    for node in graph.node:
        for j, name in enumerate(node.input):
            node.input[j] = rename.get(name, name)
        if node.op_type == "Where" and node.name.endswith("attention/self/Where"):
            earlier = first_mask.setdefault(signature(node), node.output[0])
            if earlier != node.output[0]:
                rename[node.output[0]] = earlier
                continue
        if node.op_type == "Where" and node.name.endswith("attention/self/Where_1"):
            rename[node.output[0]] = node.input[2]  # the softmax itself
            continue
        kept.append(node)
    if not rename or any(o.name in rename for o in graph.output):
        return 0
    before = len(graph.node)
    del graph.node[:]
    graph.node.extend(kept)
    while True:  # the nodes only the dropped ones read (IsNaN, their constants)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return before - len(graph.node)


def quantise_documents(out: Path) -> dict[str, Any]:
    """Write the document model (:func:`per_token_int8` of ``model.onnx``), checked against fp32.

    Measured on this project's machine (2 cores, AVX2 without VNNI): about
    1.4x fp32's texts a second, cosine with fp32 0.998 on average on news
    text (``bench/document_encoder.py``); SciFact and the dev questions in docs/benchmarks.md.
    """
    import numpy as np

    from qa.encoder import OnnxEncoder

    encoder = OnnxEncoder(out)
    outliers = peak_channels(out / "model.onnx", encoder, CHECK_TEXTS)
    products = per_token_int8(out / "model.onnx", out / DOCUMENTS_FILE, outliers)
    encoder.info["documents"] = {"file": DOCUMENTS_FILE}
    cosines = np.sum(encoder.encode(CHECK_TEXTS) * encoder.encode(CHECK_TEXTS, documents=True), axis=1)
    if float(cosines.min()) < MIN_DOCUMENT_COSINE:
        raise ExportError(
            f"the int8 document model disagrees with the fp32 export (min cosine {cosines.min():.4f} "
            f"< {MIN_DOCUMENT_COSINE})"
        )
    return {
        "file": DOCUMENTS_FILE,
        "quantisation": f"int8 weights per output column, uint8 activations per token; {products} MatMuls",
        "fp32_channels": outliers,
        "sha256": sha256_file(out / DOCUMENTS_FILE),
        "min_cosine_with_fp32": round(float(cosines.min()), 5),
    }


def peak_channels(path: Path, encoder: OnnxEncoder, texts: list[str]) -> dict[str, list[int]]:
    """For each activation that Q, K and V read, the channel with the largest magnitude on ``texts``.

    BERT-like models carry a few "massive" channels in their hidden states
    (here channel 99, at up to 5x a typical channel's peak); with one scale
    per token, that channel sets the scale and the others lose precision.
    Each text is run alone, so padding never counts.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    weights = {i.name for i in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            readers[node.input[0]] = readers.get(node.input[0], 0) + 1
    shared = [name for name, n in readers.items() if n >= 3]  # Q, K and V's input, in each layer
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in shared)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    peaks = {name: np.zeros(0, dtype=np.float32) for name in shared}
    for text in texts:
        for name, value in zip(shared, session.run(shared, encoder.inputs([text])), strict=True):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            peaks[name] = peak if not len(peaks[name]) else np.maximum(peaks[name], peak)
    return {name: [int(np.argmax(peak))] for name, peak in peaks.items()}


def per_token_int8(source: Path, dest: Path, fp32_channels: dict[str, list[int]] | None = None) -> int:
    """Write ``source`` with each activation-by-weight MatMul in int8; returns how many.

    Those are the 36 of MiniLM-L6: query, key, value, attention output and the
    two feed-forward matrices of each layer. Weights get one scale per output
    column; activations **one scale per token**, from that token's own largest
    value, so a text's vector depends on the text alone, not on the batch it
    is embedded in (ONNX Runtime's ``quantize_dynamic`` scales activations by
    the whole batch: a sentence's vector then moved with its batch-mates, and
    an incrementally updated index no longer equalled one built from
    scratch). Products that share an input (Q, K, V) read one quantised copy
    of it; they run as ``MatMulIntegerToFloat`` (uint8 x int8, weight scales
    applied inside), then one multiply by the token scales.

    ``fp32_channels``: per activation, channels left out of its int8 product
    and multiplied in fp32 beside it (a product of a few columns), so that a
    massive channel does not set the token's scale (:func:`peak_channels`).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    fp32_channels = fp32_channels or {}
    model = onnx.load(str(source))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    added: list[Any] = []

    def constant(name: str, value: Any) -> str:
        added.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    zero_point = constant("q8/zero_point", np.array(128, dtype=np.uint8))  # activations: uint8 around 128
    one = constant("q8/one", np.array(1.0, dtype=np.float32))
    tiny = constant("q8/tiny", np.array(1e-8, dtype=np.float32))
    per_level = constant("q8/per_level", np.array(1 / 127, dtype=np.float32))
    levels = constant("q8/levels", np.array(127.0, dtype=np.float32))
    # activation -> its uint8 copy, its per-token scale, and the channels multiplied in fp32 (or "")
    quantised: dict[str, tuple[str, str, str]] = {}
    nodes: list[Any] = []
    products = 0
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        x = node.input[0]
        aside = sorted(fp32_channels.get(x, []))
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        w_int = w.copy()
        w_int[aside] = 0.0  # those rows are multiplied in fp32
        w_scale = np.maximum(np.abs(w_int).max(axis=0), 1e-12) / 127
        w_int8 = np.clip(np.round(w_int / w_scale), -127, 127).astype(np.int8)
        name = f"q8/{products}"
        products += 1
        if x not in quantised:
            q = f"q8/x{len(quantised)}"
            read = x
            if aside:
                keep = np.ones(w.shape[0], dtype=np.float32)
                keep[aside] = 0.0
                nodes += [
                    helper.make_node("Mul", [x, constant(q + "/keep", keep)], [q + "/int8_part"]),
                    helper.make_node(
                        "Gather", [x, constant(q + "/aside", np.array(aside, np.int64))], [q + "/fp32_part"], axis=-1
                    ),
                ]
                read = q + "/int8_part"
            nodes += [
                helper.make_node("Abs", [read], [q + "/abs"]),
                helper.make_node("ReduceMax", [q + "/abs"], [q + "/max"], axes=[-1], keepdims=1),
                helper.make_node("Max", [q + "/max", tiny], [q + "/peak"]),
                helper.make_node("Mul", [q + "/peak", per_level], [q + "/scale"]),
                helper.make_node("Div", [levels, q + "/peak"], [q + "/inverse"]),
                helper.make_node("Mul", [read, q + "/inverse"], [q + "/levels"]),
                helper.make_node("QuantizeLinear", [q + "/levels", one, zero_point], [q + "/uint8"]),
            ]
            quantised[x] = (q + "/uint8", q + "/scale", q + "/fp32_part" if aside else "")
        x_uint8, x_scale, fp32_part = quantised[x]
        y = name + "/int8_y" if aside else node.output[0]
        nodes += [
            helper.make_node(
                "MatMulIntegerToFloat",
                [x_uint8, constant(name + "/w", w_int8), one, constant(name + "/w_scale", w_scale), zero_point],
                [name + "/y"],
                domain="com.microsoft",
            ),
            helper.make_node("Mul", [name + "/y", x_scale], [y]),
        ]
        if aside:
            nodes += [
                helper.make_node("MatMul", [fp32_part, constant(name + "/w_fp32", w[aside])], [name + "/fp32_y"]),
                helper.make_node("Add", [y, name + "/fp32_y"], [node.output[0]]),
            ]
    used = {i for n in nodes for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dest))
    return products


def verify(model_folder: Path, export: Path, texts: list[str] | None = None) -> dict[str, Any]:
    """Compare the export's vectors with sentence-transformers' on ``texts``: min cosine, token counts."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from qa.encoder import OnnxEncoder

    _quiet_libraries()

    texts = CHECK_TEXTS if texts is None else texts
    reference = SentenceTransformer(str(model_folder), device="cpu", local_files_only=True)
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=4)
    actual = OnnxEncoder(export).encode(texts, batch_size=4)
    cosines = np.sum(expected * actual, axis=1)
    ours = OnnxEncoder(export).token_counts(texts)
    theirs = [int(n) for n in reference.tokenize(texts)["attention_mask"].sum(1).tolist()]
    if ours != theirs:
        raise ExportError(f"the export's tokenizer disagrees with sentence-transformers' ({ours} vs {theirs})")
    return {
        "texts": len(texts),
        "min_cosine": round(float(cosines.min()), 7),
        "max_length": reference.max_seq_length,
    }


def _quiet_libraries() -> None:
    """The exporter's warnings and progress bars say nothing a user can act on."""
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("transformers", "sentence_transformers", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qa.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None, help="model id or folder (default: the packaged model)")
    parser.add_argument("--model-id", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from qa.encoder import default_model, model_path

    model = args.model or default_model()
    try:
        folder = ensure_export(model_path(model), model_id=args.model_id or model)
    except QAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
