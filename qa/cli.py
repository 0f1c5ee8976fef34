"""The ``qa`` command: a thin layer over the library.

User errors exit with status 2 and one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from qa.types import QAError

CORPUS = click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    envvar="QA_CORPUS",
    default="corpus",
    show_default=True,
    help="Folder of .txt/.md/.pdf/.html/.docx sources (env QA_CORPUS).",
)
INDEX = click.option(
    "--index",
    type=click.Path(path_type=Path),
    envvar="QA_INDEX",
    default="index",
    show_default=True,
    help="Index folder (env QA_INDEX).",
)
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON for tools instead of text.")


def _calibration(ctx: click.Context, param: click.Parameter, names: str | None) -> tuple[str, ...] | None:
    """The calibrator's inputs named on the command line (None: the default), checked against the known ones."""
    from qa.rank import CALIBRATION_INPUTS

    if names is None:
        return None
    chosen = tuple(n.strip() for n in names.split(",") if n.strip())
    unknown = [n for n in chosen if n not in CALIBRATION_INPUTS]
    if unknown or not chosen:
        raise UserError(f"unknown calibrator inputs {unknown}; choose from {', '.join(CALIBRATION_INPUTS)}")
    return chosen


CALIBRATION = click.option(
    "--calibration",
    default=None,
    metavar="NAMES",
    callback=_calibration,
    help="Comma-separated calibrator inputs (qa.rank.CALIBRATION_INPUTS); default top,margin,cosine,bm25.",
)


def _verify_margin(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--verify-margin``: logits (a number ≥ 0), or "all" for every one of the first ranker's top 5."""
    from qa.rank import VERIFY_MARGIN, parse_verify_margin

    if value is None:
        return VERIFY_MARGIN
    try:
        return parse_verify_margin(value)
    except ValueError:
        raise UserError(f"--verify-margin takes a number of logits ≥ 0 or 'all', not {value!r}") from None


VERIFY_MARGIN_OPTION = click.option(
    "--verify-margin",
    default=None,
    metavar="LOGITS|all",
    callback=_verify_margin,
    help="The verifier skips candidates the first ranker puts this far behind its best "
    "(default qa.rank.VERIFY_MARGIN; 'all': it reads all 5).",
)


class UserError(click.ClickException):
    exit_code = 2


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the library; its errors become one-sentence messages with status 2."""
    try:
        return fn(*args, **kwargs)
    except QAError as exc:
        raise UserError(str(exc)) from exc


def shown(name: str) -> str:
    """A file name on one line: newlines, control characters and undecodable bytes as escapes.

    >>> shown("a\nb.txt")
    'a\\nb.txt'
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _skipped_lines(report: dict[str, Any]) -> list[str]:
    """``skipped NAME: REASON`` for each file a build did not index (older reports have no reasons)."""
    reasons = report.get("skipped_reasons") or {}
    return [f"skipped {shown(d)}: {reasons.get(d, 'unreadable')}" for d in report.get("skipped", [])]


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


class PluginGroup(click.Group):
    """A group that also offers the commands registered in the ``qa.commands`` entry-point group.

    This is how ``qa serve`` (the web chat, package ``ui``) joins the command
    without ``qa`` importing it. Plugins load on first lookup, not at import,
    so a plugin may itself import from this module.
    """

    _plugins_loaded = False

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group="qa.commands"):
            if ep.name in self.commands:
                continue
            try:
                command = ep.load()
            except Exception as exc:  # a broken plugin must not break `qa ask`
                logging.getLogger(__name__).warning("cannot load command %r (%s): %s", ep.name, ep.value, exc)
                continue
            if isinstance(command, click.Command):
                self.add_command(command, ep.name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load_plugins()
        return super().get_command(ctx, cmd_name)


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log progress (-v) or details (-vv) to stderr, instead of bars.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars (they are drawn only on a terminal anyway).")
@click.version_option(package_name="qa-alliance")
def main(verbose: int, quiet: bool) -> None:
    """Ask questions about the documents in a corpus folder and see where the answers come from."""
    from qa import progress

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Bars on a terminal only: piped to a file or read by a program, a command prints its summary alone.
    progress.show_bars(not quiet and not verbose and _is_terminal(sys.stderr))


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


@main.command()
@click.argument("question")
@click.option("-k", "k", type=int, default=3, show_default=True, help="Number of sources (1-20).")
@click.option("--history", multiple=True, help="An earlier question of the chat (repeat, oldest first).")
@INDEX
@JSON
def ask(question: str, k: int, history: tuple[str, ...], index: Path, as_json: bool) -> None:
    """Answer QUESTION from the indexed sources, citing document and offsets."""
    from qa.answer import answer

    result = _run(answer, question, history=history, k=k, index=index)
    if as_json:
        _echo_json(result.to_dict())
        return
    click.echo(result.text)
    if result.confidence_label:
        click.echo(f"Confidence: {result.confidence_label} ({result.confidence:.2f})")
    click.echo()
    label = "Closest matches (low confidence):" if result.abstained else "Sources:"
    if result.sources:
        click.echo(label)
    for rank, s in enumerate(result.sources, 1):
        where = f", page {s.page}" if s.page is not None else (f", {shown(s.heading)}" if s.heading else "")
        click.echo(f"[{rank}] {shown(s.doc)}{where} chars {s.start}-{s.end} (score {s.score:.3f})")
        click.echo(f"    {' '.join(s.text.split())}")


@main.group()
def index() -> None:
    """Build the index or check whether it matches the corpus."""


@index.command()
@CORPUS
@INDEX
@click.option("--force", is_flag=True, help="Rebuild even if the index is fresh.")
@click.option(
    "--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]",
    help="Read and embed on a Ray cluster: ADDRESS of its head (HOST:PORT), 'local' for one in this process, "
    "or none for the cluster `ray start` made here (needs the cluster extra; docs/scaling.md).",
)  # fmt: skip
@click.option(
    "--actors", type=click.IntRange(min=1), default=None,
    help="With --ray: embedding actors, one CPU or GPU each (default: one per GPU of the cluster, else per CPU).",
)  # fmt: skip
@click.option(
    "--gpu/--no-gpu", default=None,
    help="With --ray: each embedding actor takes a GPU and runs the model with CUDA (onnxruntime-gpu), or never "
    "(default: when the cluster has GPUs and this onnxruntime has CUDA).",
)  # fmt: skip
@JSON
def build(
    corpus: Path, index: Path, force: bool, ray_address: str | None, actors: int | None, gpu: bool | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Build or refresh the index, re-embedding only what changed."""
    if actors is not None and ray_address is None:
        raise UserError("--actors sizes the Ray build's embedding pool; add --ray")
    if gpu is not None and ray_address is None:
        raise UserError("--gpu and --no-gpu choose the Ray build's actors; add --ray (a local build: QA_DEVICE=gpu)")
    if ray_address is not None:
        from qa.cluster import build_index_on_ray

        manifest = _run(build_index_on_ray, corpus, index, address=ray_address, actors=actors, force=force, gpus=gpu)
    else:
        from qa.build import build_index

        manifest = _run(build_index, corpus, index, force=force)
    if as_json:
        _echo_json(_build_json(manifest))
        return
    click.echo(
        f"index {index} version {manifest.version}: {manifest.documents} documents, {manifest.sentences} sentences"
    )
    if manifest.build:
        click.echo(_report_line(manifest.build))
        for line in _skipped_lines(manifest.build):
            click.echo(line)


def _build_json(manifest: Any) -> dict[str, Any]:
    return {"version": manifest.version, "built_at": manifest.built_at, "documents": manifest.documents,
            "sentences": manifest.sentences, "vectors": manifest.vectors, **manifest.build}  # fmt: skip


def _report_line(report: dict[str, Any]) -> str:
    """One line saying what a build did (older reports lack some counts)."""
    r = {"renamed": 0, "sentences_embedded": "?", "sentences_reused": "?", **report}
    if r.get("noop"):
        return f"nothing to do: {r['unchanged']} files unchanged; {r['seconds']} s"
    return (
        "files: {added} added, {changed} changed, {renamed} renamed, {removed} removed, "
        "{unchanged} unchanged; "
        "sentences: {sentences_embedded} embedded, {sentences_reused} reused "
        "({embedded} texts embedded, {reused} reused); {seconds} s".format(**r)
    )


@index.command()
@CORPUS
@INDEX
@click.option(
    "--debounce-ms", type=click.IntRange(min=0), default=400, show_default=True,
    help="Quiet time after the last change before rebuilding.",
)  # fmt: skip
@JSON
def watch(corpus: Path, index: Path, debounce_ms: int, as_json: bool) -> None:
    """Rebuild the index whenever source files (.txt .md .pdf .html .htm .docx) in the corpus change (Ctrl-C stops).

    Builds first if the index is not fresh, then prints one line per rebuild
    (one JSON object a line with --json). A burst of changes, such as an
    editor's save, triggers one rebuild.
    """
    from datetime import datetime

    from qa import progress
    from qa.watch import watch_corpus

    progress.show_bars(False)  # one line per rebuild, as a log reads it

    def built(manifest: Any) -> None:
        if as_json:
            click.echo(json.dumps(_build_json(manifest), ensure_ascii=False))
        else:
            stamp = datetime.now().strftime("%H:%M:%S")
            click.echo(f"{stamp} rebuilt {index} version {manifest.version}: {_report_line(manifest.build)}")
            for line in _skipped_lines(manifest.build):
                click.echo(f"{stamp} {line}")

    def failed(exc: Exception) -> None:
        click.echo(f"rebuild failed (the previous index stays live): {exc}", err=True)

    def ready() -> None:
        if not as_json:
            click.echo(f"watching {corpus} for changes (index {index}); Ctrl-C stops")

    try:
        _run(watch_corpus, corpus, index, debounce_ms=debounce_ms,
             on_build=built, on_error=failed, on_ready=ready)  # fmt: skip
    except KeyboardInterrupt:
        if not as_json:
            click.echo("stopped")


@index.command()
@CORPUS
@INDEX
@click.option("--full-check", is_flag=True, help="Read every index file's whole sha256 (large files are sampled).")
@JSON
def status(corpus: Path, index: Path, full_check: bool, as_json: bool) -> None:
    """Say whether the index is fresh, stale (and which files differ), missing or corrupted.

    Exit status: 0 fresh, 1 otherwise.
    """
    from qa.build import index_status

    st = _run(index_status, corpus, index, full=full_check)
    m = st.manifest
    if as_json:
        _echo_json({"state": st.state, "reason": st.reason, "added": st.added, "changed": st.changed,
                    "removed": st.removed, "version": m.version if m else None,
                    "built_at": m.built_at if m else None, "documents": m.documents if m else 0,
                    "sentences": m.sentences if m else 0})  # fmt: skip
    else:
        click.echo(f"{st.state}: {index}" + (f" ({st.reason})" if st.reason else ""))
        if m:
            click.echo(f"built {m.built_at}: {m.documents} documents, {m.sentences} sentences, model {m.model}")
        for name, files in (("added", st.added), ("changed", st.changed), ("removed", st.removed)):
            for f in files:
                click.echo(f"  {name}: {shown(f)}")
    sys.exit(0 if st.fresh else 1)


DATA = click.option(
    "--data",
    type=click.Path(path_type=Path),
    envvar="QA_DATA",
    default="data",  # qa.feedback.default_data_folder's; not imported here, as it loads the engine
    show_default=True,
    help="Folder of the ratings file, feedback.sqlite; never the index folder (env QA_DATA).",
)


@main.group()
def feedback() -> None:
    """Ratings given in the web chat or the HTTP API: export them as test cases, or count them."""


@feedback.command("export")
@DATA
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), help="Only ratings from this day on (UTC).")
def feedback_export(data: Path, since: Any) -> None:
    """Write the ratings as cases `qa eval` reads, one JSON object a line (redirect to cases.jsonl).

    A thumbs-up gives a case whose gold is the cited sentence (an abstention
    rated up: gold null, the sources don't answer). A thumbs-down gives a case
    marked "review", which `qa eval` skips until its gold is written.
    """
    from qa.feedback import FeedbackStore

    store = FeedbackStore(data)
    for case in _run(lambda: list(store.export_cases(since.date() if since is not None else None))):
        click.echo(json.dumps(case, ensure_ascii=False))


@feedback.command("stats")
@DATA
@JSON
def feedback_stats(data: Path, as_json: bool) -> None:
    """Count ratings by day and by answer state (answered or abstained)."""
    from qa.feedback import FeedbackStore

    rows = _run(FeedbackStore(data).stats)
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"no ratings in {data}")
        return
    click.echo(f"{'day':10}  {'state':9}  {'up':>5}  {'down':>5}")
    for r in rows:
        click.echo(f"{r['day']:10}  {r['state']:9}  {r['up']:5}  {r['down']:5}")
    up, down = sum(r["up"] for r in rows), sum(r["down"] for r in rows)
    click.echo(f"{'total':10}  {'':9}  {up:5}  {down:5}")


ONE_ARTICLE = click.option(
    "--one-article", is_flag=True,
    help="--squad with --verifier: also ask each article as a corpus of its own; the calibrator is fit on both sizes.",
)  # fmt: skip
ABSTAIN_QUANTILE = click.option(
    "--abstain-quantile", type=click.FloatRange(0.0, 0.5, max_open=True), default=None, metavar="SHARE",
    help="--squad: the threshold is fit to put this share of held-out answerable questions under it "
    "(default qa.train.ABSTAIN_QUANTILE, 0.035).",
)  # fmt: skip
CORPUS_FROM = click.option(
    "--corpus-from", type=click.Path(path_type=Path),
    help="--squad: another SQuAD file whose articles are the corpus (e.g. v2.0 questions against v1.1 articles).",
)  # fmt: skip


@main.command("eval")
@click.argument("questions", type=click.Path(path_type=Path), required=False)
@click.option("--beir", type=click.Path(path_type=Path), help="A BEIR folder to run as document retrieval.")
@click.option("--squad", type=click.Path(path_type=Path), help="A SQuAD-format JSON[.gz] file, articles as one corpus.")
@click.option("--folds", type=click.IntRange(1, 24), default=5, show_default=True,
              help="--squad: cross-validation folds (by article).")  # fmt: skip
@click.option("--chats", is_flag=True, help="--squad: also ask the rule-made follow-up chats.")
@click.option("--verifier", type=click.Path(path_type=Path), help="--squad: a verifier model for the learned ranker.")
@CORPUS_FROM
@ONE_ARTICLE
@CALIBRATION
@VERIFY_MARGIN_OPTION
@ABSTAIN_QUANTILE
@click.option("--work", type=click.Path(path_type=Path), help="Keep the BEIR or SQuAD index here between runs.")
@INDEX
@JSON
def eval_(
    questions: Path | None, beir: Path | None, squad: Path | None, folds: int, chats: bool, verifier: Path | None,
    corpus_from: Path | None, one_article: bool, calibration: tuple[str, ...] | None, verify_margin: float | None,
    abstain_quantile: float | None, work: Path | None, index: Path, as_json: bool,
) -> None:  # fmt: skip
    """Measure answers on a QUESTIONS.jsonl file, SQuAD data (--squad FILE) or a BEIR data set (--beir DIR).

    Question lines are {"id", "question", "gold"} (gold: list of phrases, or
    null when the sources don't answer) or conversations {"id", "turns", "gold"}.
    """
    from qa import eval as evaluation
    from qa.answer import get_engine

    if sum(x is not None for x in (questions, beir, squad)) != 1:
        raise UserError("give one of a QUESTIONS.jsonl file, --squad FILE or --beir DIR")
    if squad is not None:
        result = _run(evaluation.evaluate_squad, squad, folds=folds, work=work, chats=chats, verifier=verifier,
                      calibration=calibration, verify_margin=verify_margin, corpus_from=corpus_from,
                      one_article=one_article, abstain_quantile=abstain_quantile)  # fmt: skip
        if as_json:
            _echo_json(result)
        else:
            _print_squad(result)
        return
    if beir is not None:
        result = _run(evaluation.evaluate_beir, beir, work=work)
        if as_json:
            _echo_json(result)
            return
        click.echo(f"{beir}: {result['queries']} queries, {result['documents']} documents")
        for name in ("dense", "shipped"):
            m = result[name]
            click.echo(
                f"{name:8} nDCG@10 {m['ndcg@10']:.4f}  recall@10 {m['recall@10']:.4f}  recall@100 {m['recall@100']:.4f}"
            )
        return
    cases = _run(evaluation.load_cases, questions)
    summary = _run(evaluation.evaluate, cases, get_engine(index)).summary()
    if as_json:
        _echo_json(summary)
        return
    s = summary
    if s["answerable"]:
        click.echo(f"top-1 {s['top1']}/{s['answerable']}   top-3 {s['top3']}/{s['answerable']}   (answerable)")
    if s["unanswerable"] or s["abstained_answerable"]:
        click.echo(
            f"abstained {s['abstained_unanswerable']}/{s['unanswerable']} unanswerable, "
            f"{s['abstained_answerable']}/{s['answerable']} answerable; "
            f"precision {s['abstention_precision']}, recall {s['abstention_recall']}"
        )
    if s["follow_ups"]:
        click.echo(f"follow-ups {s['follow_up_correct']}/{s['follow_ups']}")
    click.echo(f"latency p50 {s['latency_ms_p50']} ms, p95 {s['latency_ms_p95']} ms")
    for miss in s["misses"]:
        click.echo(f"miss {miss['id']}: {miss['question']!r}" + (" (abstained)" if miss["abstained"] else ""))
        click.echo(f"    returned: {' '.join((miss['returned'] or '-').split())[:160]}")


def _print_squad(r: dict[str, Any]) -> None:
    click.echo(f"{r['articles']} articles as one corpus, {r['questions']} questions, {r['folds']} folds by article")
    for name in ("today", "learned", "learned_one_article"):
        m = r.get(name)
        if not m:
            continue
        click.echo(f"\n{name}: threshold {m['threshold']}" + (" (held-out folds)" if name == "learned" else ""))
        click.echo(
            f"  top-1 {m['top1']} (abstentions are misses; ranking alone {m['top1_ranking']})   top-3 {m['top3']}"
        )
        dropped, off = m.get("abstained_dropped"), m.get("abstained_off_corpus")
        click.echo(f"  abstained: answer-dropped {dropped}   off-corpus {off}   answerable {m['abstained_answerable']}")
        if "abstained_unanswerable" in m:
            click.echo(f"  abstained: SQuAD v2.0 unanswerable {m['abstained_unanswerable']}")
        if "phrase_f1" in m:
            click.echo(f"  answer phrase (answerable questions, abstention 0): exact match {m['phrase_em']}   "
                       f"F1 {m['phrase_f1']}   phrase given for {m['phrase_given']} of answers")  # fmt: skip
        if "v2_f1" in m:
            click.echo(f"  SQuAD v2.0 scoring (abstaining on unanswerable counts 1): EM {m['v2_em']}   F1 {m['v2_f1']}")
        if "chats" in m:
            click.echo(f"  follow-up chats {m['chats_right']}/{m['chats']}")
        click.echo(f"  expected calibration error {m['ece']}; reliability (bin: n, mean confidence, accuracy):")
        for b in m["reliability"]:
            if b["n"]:
                click.echo(
                    f"    {b['low']:.1f}-{b['high']:.1f}: {b['n']:5}  {b['confidence']:.3f}  {b['accuracy']:.3f}"
                )
        click.echo("  threshold  precision  recall  abstained answerable / unanswerable")
        for t in m["tradeoff"]:
            click.echo(f"    {t['threshold']:.3f}     {t['precision']}   {t['recall']}   "
                       f"{t['abstained_answerable']} / {t['abstained_unanswerable']}")  # fmt: skip
        click.echo(
            f"  first stage p50 {m['first_stage_ms_p50']} ms, p95 {m['first_stage_ms_p95']} ms (embedding batched)"
        )
        if "answer_ms_p50" in m:
            click.echo(f"  answer() p50 {m['answer_ms_p50']} ms, p95 {m['answer_ms_p95']} ms (warm, one at a time)")


@main.command("train")
@click.option("--squad", type=click.Path(path_type=Path), required=True, help="A SQuAD-format JSON[.gz] file.")
@click.option("--folds", type=click.IntRange(1, 24), default=5, show_default=True,
              help="Folds by article for the held-out scores the calibrator is fit on.")  # fmt: skip
@click.option("--work", type=click.Path(path_type=Path), help="Keep the SQuAD index here between runs.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("qa/models/ranker.json"), show_default=True)
@click.option("--verifier", type=click.Path(path_type=Path), help="A verifier model whose logit becomes a feature.")
@CORPUS_FROM
@ONE_ARTICLE
@CALIBRATION
@VERIFY_MARGIN_OPTION
@ABSTAIN_QUANTILE
@click.option("--limit-articles", type=click.IntRange(1), help="Only the first N articles (quick runs).")
@click.option("--limit-questions", type=click.IntRange(1), help="Only the first N questions of each article.")
def train_(squad: Path, folds: int, work: Path | None, out: Path, verifier: Path | None, corpus_from: Path | None,
           one_article: bool, calibration: tuple[str, ...] | None, verify_margin: float | None,
           abstain_quantile: float | None, limit_articles: int | None,
           limit_questions: int | None) -> None:  # fmt: skip
    """Fit the ranker, its calibrator and the abstention threshold on SQuAD data; write the JSON."""
    from qa.train import train

    # The command as it could be typed again (global options such as -v say nothing about the fit).
    parts = [f"--squad {squad}", f"--folds {folds}"]
    parts += [f"--work {work}"] if work is not None else []
    parts += [f"--verifier '{verifier}'"] if verifier is not None else []
    parts += [f"--corpus-from {corpus_from}"] if corpus_from is not None else []
    parts += ["--one-article"] if one_article else []
    parts += [f"--calibration {','.join(calibration)}"] if calibration else []
    parts += (
        [f"--verify-margin {'all' if verify_margin is None else f'{verify_margin:g}'}"] if verifier is not None else []
    )
    parts += [f"--abstain-quantile {abstain_quantile:g}"] if abstain_quantile is not None else []
    parts += [f"--limit-articles {limit_articles}"] if limit_articles else []
    parts += [f"--limit-questions {limit_questions}"] if limit_questions else []
    command = "qa train " + " ".join([*parts, f"--out {out}"])
    ranker, meta = _run(train, squad, folds=folds, work=work, out=out, limit_articles=limit_articles,
                        limit_questions=limit_questions, command=command, verifier=verifier,
                        calibration=calibration, verify_margin=verify_margin, corpus_from=corpus_from,
                        one_article=one_article, abstain_quantile=abstain_quantile)  # fmt: skip
    click.echo(f"{out}: {meta['questions']} questions from {meta['articles']} articles, "
               f"threshold {ranker.threshold:.4f}")  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    main()
