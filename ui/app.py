"""The web chat: ``build_app(...) -> gr.Blocks`` and the ``qa serve`` command.

Importing this module does no work and does not import Gradio (``qa --help``
and ``qa ask`` load it through the ``qa.commands`` entry point). The model and
index load once, in :func:`build_app`, before the app serves anyone.

>>> demo = build_app(index="index", corpus="corpus")   # doctest: +SKIP
>>> launch(demo, host="127.0.0.1", port=7860)           # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import logging
import math
import os
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from qa import Answer, QAError, QuestionError, Source
from qa.cli import CORPUS, INDEX, UserError
from ui import render

if TYPE_CHECKING:
    import gradio as gr

    from qa import Engine

log = logging.getLogger(__name__)

ARTICLE_ID = "mitsubishi-joins-renault-nissan-alliance.txt"
ARTICLE_EXAMPLES = [
    "How many vehicles did Mitsubishi sell in Southeast Asia?",
    "Which minivan will Nissan get from Mitsubishi?",
    "Which company makes batteries for the alliance's electric cars in China?",
    "Who is Carlos Ghosn?",
]
EMPTY_PANEL = '<div class="qa-panel empty"><p class="qa-heading">Ask a question: the passages it comes from appear here, with the cited sentences highlighted.</p></div>'  # noqa: E501

CSS = """
#qa-sources .qa-panel { font-size: 0.95rem; }
#qa-sources .qa-heading { font-weight: 600; margin: 0 0 0.5rem; }
#qa-sources .qa-source { border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: 0.6rem 0.8rem; margin-bottom: 0.6rem; background: var(--background-fill-secondary); }
#qa-sources .qa-source-head { font-size: 0.85rem; margin-bottom: 0.3rem;
  color: var(--body-text-color-subdued); }
#qa-sources .qa-rank { font-weight: 700; color: var(--body-text-color); }
#qa-sources .qa-doc { font-family: var(--font-mono); }
#qa-sources .qa-passage { white-space: pre-wrap; line-height: 1.5; }
#qa-sources mark.answer { background: #ffe066; color: #111; padding: 0 1px; border-radius: 2px; }
#qa-sources mark.answer:not([data-rank="1"]) { background: #fff1b8; }
#qa-sources strong.qa-phrase { font-weight: 700; text-decoration: underline; text-decoration-thickness: 2px; }
#qa-sources mark.closest { background: transparent; color: inherit; border-bottom: 2px dashed #999; }
#qa-sources .abstained .qa-heading { color: #a15c00; }
#qa-sources sup.qa-mark-rank { font-size: 0.7em; font-weight: 700; margin-left: 1px; }
#qa-status { font-size: 0.85rem; }
#qa-sources img.qa-page { display: block; max-width: 100%; height: auto; margin: 0.3rem 0 0.5rem;
  border: 1px solid var(--border-color-primary); }
"""

# The side panel can be long: bring the first cited sentence into view after each answer.
SCROLL_TO_HIGHLIGHT = """() => {
  const mark = document.querySelector('#qa-sources mark.answer, #qa-sources mark.closest');
  if (mark) mark.scrollIntoView({block: 'center', behavior: 'instant'});
}"""


def _offline_environment() -> None:
    """Nothing may reach the network: no analytics, no version check, no model hub."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class _NoStubRewrites(importlib.abc.MetaPathFinder):
    """Loads ``gradio.component_meta`` with its type-stub writer turned off.

    On every import, Gradio re-parses the source of each of its ~80 component
    classes and rewrites their ``.pyi`` stub files beside them, a development
    aid (``create_or_modify_pyi``) that is half of ``import gradio``'s 3 s here.
    The stubs only serve type checkers and ship with the package; skipping the
    rewrite changes nothing at run time and leaves the installed files alone.
    """

    MODULE = "gradio.component_meta"

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != self.MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            if callable(getattr(module, "create_or_modify_pyi", None)):
                module.create_or_modify_pyi = _no_stub_rewrite  # type: ignore[attr-defined]

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _no_stub_rewrite(*args: object, **kwargs: object) -> None:
    return None


def _gradio() -> ModuleType:
    """``import gradio``, offline and without its stub rewrites (see :class:`_NoStubRewrites`)."""
    _offline_environment()
    if "gradio" in sys.modules:
        return sys.modules["gradio"]
    finder = _NoStubRewrites()
    # The list is replaced, never changed in place: another thread (the engine loading beside
    # this import) may be walking it, and a removal in place could make it skip a finder.
    sys.meta_path = [finder, *sys.meta_path]
    try:
        import gradio
    finally:
        sys.meta_path = [f for f in sys.meta_path if f is not finder]
    return gradio


def _friendly(exc: Exception) -> str:
    message = str(exc).strip() or "something went wrong"
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


class ChatService:
    """What the page and the API do, without Gradio: answer, look up passages, report status."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ask(self, question: str, history: Sequence[str] = (), k: int = 3) -> Answer:
        return self.engine.answer(question, history=history, k=k)

    def page_image(self, source: Source) -> str | None:
        """The source's PDF page with its sentence boxed, as a data: URI; None when the file changed or is gone."""
        data = self.engine.retriever().data
        document = data.documents.get(source.doc)
        if document is None or source.page is None:
            return None
        path = Path(data.manifest.corpus) / source.doc
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(raw).hexdigest() != document.sha256:
            return None  # the file changed since the index was built: its boxes would be wrong
        try:
            return render.data_uri(render.page_png(raw, source.page, source.boxes))
        except Exception:  # a page that no longer renders: show the passage without its picture
            log.warning("cannot render page %s of %s", source.page, source.doc, exc_info=True)
            return None

    def passage_text(self, source: Source) -> str:
        document = self.engine.retriever().data.documents.get(source.doc)
        return document.text[source.passage_start : source.passage_end] if document else source.text

    def status(self, *, after_answer: bool = False) -> dict[str, Any]:
        """The live index: counts, build time, version, and whether it still matches the corpus.

        After an answer the corpus is not walked again (it cost 150 ms on 5,000
        files): the comparison made for this index version is reused; a rebuild
        (by the watcher or anyone) makes a new version and a new comparison.
        Opening the page compares afresh (at most every 2 s).
        """
        s = self.engine.status(max_age=math.inf if after_answer else 2.0)
        if s["swapping"]:
            s["state"], s["reason"] = "stale", "a newer index version is loading"
        return s

    def status_markdown(self, *, after_answer: bool = False) -> str:
        s = self.status(after_answer=after_answer)
        try:
            built = datetime.fromisoformat(s["built_at"]).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            built = s["built_at"]
        docs = "document" if s["documents"] == 1 else "documents"
        state = "fresh" if s["state"] == "fresh" else f"{s['state']} ({s['reason']})" if s["reason"] else s["state"]
        text = (
            f"Index: {s['documents']} {docs}, {s['sentences']} sentences, built {built}, "
            f"version {s['version']}, {state}"
        )
        return render.escape_markdown(text)

    def examples(self) -> list[str]:
        return ARTICLE_EXAMPLES if ARTICLE_ID in self.engine.retriever().data.documents else []


def start_engine(
    index: str | os.PathLike[str] | None = None,
    corpus: str | os.PathLike[str] | None = None,
    *,
    watch: bool = False,
) -> Engine:
    """Build the index if missing or stale, load model and index, and answer one warm-up question.

    With ``watch`` the corpus is watched: each change rebuilds the index and
    the engine swaps to it in the background.
    """
    from qa import build_index, get_engine

    index_path = Path(index if index is not None else os.environ.get("QA_INDEX", "index"))
    if corpus is not None and Path(corpus).is_dir():
        build_index(corpus, index_path)
    engine = get_engine(index_path)
    if watch:
        from qa.watch import CorpusWatcher

        if corpus is None or not Path(corpus).is_dir():
            raise QAError("--watch needs a corpus folder to watch; pass --corpus DIR")
        CorpusWatcher(corpus, index_path, engine=engine).start()
    engine.retriever()
    # The first real question then costs what later ones do (lazy torch/FAISS/BM25 paths are warm).
    engine.answer("How does this work?")
    return engine


def build_app(
    index: str | os.PathLike[str] | None = None,
    corpus: str | os.PathLike[str] | None = None,
    *,
    examples: Sequence[str] | None = None,
    k: int = 3,
    watch: bool = False,
    engine: Engine | None = None,
) -> gr.Blocks:
    """The web chat for an index folder (built from ``corpus`` when missing or stale).

    Loads the model and index now, so the first question is as fast as later
    ones. ``examples`` default to questions about the bundled article when it
    is indexed. ``watch`` rebuilds the index when the corpus changes and
    swaps to it without a restart. ``engine``, when given, is a started engine
    (see :func:`start_engine`) and the other arguments but ``examples`` and ``k``
    are ignored. Launch with :func:`launch` (it adds the page's CSS).
    """
    gr = _gradio()
    service = ChatService(engine if engine is not None else start_engine(index, corpus, watch=watch))
    example_questions = list(examples) if examples is not None else service.examples()

    def ask_or_explain(question: str, history: Sequence[str], k: int) -> Answer:
        """The answer, or gr.Error with the one-sentence message (an API client's AppError).

        The message is plain text: only API clients get it (the page shows errors inline).
        """
        try:
            return service.ask(question, history=history, k=k)
        except QuestionError as exc:
            raise gr.Error(_friendly(exc), title="Please check the question", print_exception=False) from exc
        except QAError as exc:
            log.error("could not answer: %s", exc)
            raise gr.Error(_friendly(exc), title="The index is not available", print_exception=False) from exc

    def respond(
        question: str, chat: list[dict[str, Any]] | None, asked: list[str] | None
    ) -> tuple[list[dict[str, Any]], Any, Any, list[str], Any, list[dict[str, Any]]]:
        # ``chat`` is server-side state, never the client's copy of the chat: a client-supplied
        # history once made the server open a file named in it.
        asked = list(asked or [])
        chat = list(chat or [])
        try:
            result = service.ask(question, history=asked, k=k)
        except QAError as exc:
            # An inline note, not gr.Error: its overlay covered the chat, the question box and
            # the panel until closed. Panel, status and the typed question stay as they were.
            if not isinstance(exc, QuestionError):
                log.error("could not answer: %s", exc)
            title = "Please check the question" if isinstance(exc, QuestionError) else "The index is not available"
            note = f"**{title}:** {render.escape_markdown(_friendly(exc))}"
            chat = [*chat, {"role": "assistant", "content": note}]
            return chat, gr.skip(), gr.skip(), asked, gr.skip(), chat
        chat = [
            *chat,
            {"role": "user", "content": render.chat_question(question)},
            {"role": "assistant", "content": render.chat_reply(result)},
        ]
        panel = render.panel_html(render.panel(result, service.passage_text, service.page_image))
        return chat, panel, service.status_markdown(after_answer=True), [*asked, question.strip()], "", chat

    def answer(question: str, history: list[str] | None = None, k: int = 3) -> dict[str, Any]:
        """Answer a question from the indexed sources.

        history: the chat's earlier questions, oldest first. k: number of sources (1-20).
        Returns the answer (text, abstained, confidence, index_version) and its sources
        (doc, start, end, text, score, passage_start, passage_end), best first.
        """
        return ask_or_explain(question, history or [], k).to_dict()

    def clear() -> tuple[list[dict[str, Any]], str, list[str], str, list[dict[str, Any]]]:
        return [], EMPTY_PANEL, [], "", []

    with gr.Blocks(title="Ask the sources", analytics_enabled=False) as demo:
        gr.Markdown("## Ask the sources\nAnswers come only from the indexed documents, citing the exact sentences.")
        status = gr.Markdown(service.status_markdown(), elem_id="qa-status")
        asked = gr.State([])
        messages = gr.State([])
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Chat",
                    elem_id="qa-chat",
                    height=460,
                    sanitize_html=True,
                    latex_delimiters=[],
                    allow_tags=False,
                    buttons=["copy"],
                    feedback_options=None,
                )
                with gr.Row():
                    question = gr.Textbox(
                        placeholder="Ask a question about the sources…",
                        show_label=False,
                        lines=1,
                        max_lines=4,
                        scale=5,
                        elem_id="qa-question",
                        autofocus=True,
                    )
                    ask = gr.Button("Ask", variant="primary", scale=1, elem_id="qa-ask")
                clear_button = gr.Button("Clear chat", variant="secondary", size="sm", elem_id="qa-clear")
                ask_examples = (
                    gr.Examples(example_questions, inputs=[question], label="Example questions", elem_id="qa-examples")
                    if example_questions
                    else None
                )
            with gr.Column(scale=2):
                gr.Markdown("### Sources")
                panel = gr.HTML(EMPTY_PANEL, elem_id="qa-sources")

        outputs = [chatbot, panel, status, asked, question, messages]
        # Questions are independent: several run at once (each reads the one index version it captured).
        chat_io: dict[str, Any] = {
            "inputs": [question, messages, asked], "outputs": outputs, "concurrency_limit": concurrency(),
            "concurrency_id": "answer",
        }  # fmt: skip
        scroll: dict[str, Any] = {"fn": None, "js": SCROLL_TO_HIGHLIGHT, "api_visibility": "private"}
        question.submit(respond, api_name="chat", **chat_io).then(**scroll)
        ask.click(respond, api_visibility="private", **chat_io).then(**scroll)
        if ask_examples is not None:
            ask_examples.load_input_event.then(respond, api_visibility="private", **chat_io).then(**scroll)
        cleared = [chatbot, panel, asked, question, messages]
        clear_button.click(clear, outputs=cleared, api_visibility="private")
        chatbot.clear(clear, outputs=cleared, api_visibility="private")
        demo.load(service.status_markdown, outputs=[status], api_visibility="private")
        gr.api(answer, api_name="answer", concurrency_limit=concurrency(), concurrency_id="answer")
    return demo


def concurrency() -> int:
    """Questions answered at once by the server: ``$QA_CONCURRENCY``, default 8."""
    raw = os.environ.get("QA_CONCURRENCY", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 8


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860, **kwargs: Any) -> tuple[Any, str, str]:
    """Start serving ``demo`` with the page's CSS; returns Gradio's ``(app, local_url, share_url)``."""
    gr = _gradio()
    from starlette.middleware import Middleware

    from ui.limits import RequestLimits

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    # Independent questions run at once: encoding (ONNX Runtime), FAISS and numpy release the GIL,
    # and each answer reads one index version it captured, so concurrency cannot mix versions.
    demo.queue(default_concurrency_limit=concurrency())
    # No uploads (the page has no file input) and small request bodies: see ui/limits.py.
    app_kwargs = {**kwargs.pop("app_kwargs", {}), "middleware": [Middleware(RequestLimits)]}
    kwargs.setdefault("max_file_size", 0)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        css=CSS,
        theme=theme,
        footer_links=["api"],
        ssr_mode=False,
        app_kwargs=app_kwargs,
        **kwargs,
    )


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="QA_HOST",
    help="Interface to listen on; 0.0.0.0 exposes the chat to your network (env QA_HOST).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=7860,
    show_default=True,
    envvar="QA_PORT",
    help="Port to listen on (env QA_PORT).",
)
@INDEX
@CORPUS
@click.option("--watch", is_flag=True, help="Rebuild the index when corpus files change, without a restart.")
def serve(host: str, port: int, index: Path, corpus: Path, watch: bool) -> None:
    """Open the web chat on http://HOST:PORT, building the index first if missing or stale."""
    source = click.get_current_context().get_parameter_source("corpus")
    if not corpus.is_dir() and source is not click.core.ParameterSource.DEFAULT:
        raise UserError(f"corpus folder {str(corpus)!r} does not exist or is not a folder")
    _check_port(host, port)  # before loading anything: a taken port fails in a second, not after the model loads
    click.echo("qa serve: loading the index and the model…", err=True)
    # Load the engine in a thread while this one imports Gradio (seconds of Python imports).
    started: dict[str, Any] = {}

    def load() -> None:
        from qa.embed import prepare_concurrent

        try:
            started["engine"] = start_engine(index, corpus if corpus.is_dir() else None, watch=watch)
            prepare_concurrent()  # a server answers several people at once: not on its first users' time
        except Exception as exc:  # re-raised below, in the main thread
            started["error"] = exc

    loader = threading.Thread(target=load, name="qa-start", daemon=True)
    loader.start()
    _gradio()
    loader.join()
    if isinstance(started.get("error"), QAError):
        raise UserError(str(started["error"])) from started["error"]
    if "error" in started:
        raise started["error"]
    click.echo("qa serve: index and model loaded", err=True)
    try:
        demo = build_app(index=index, corpus=corpus if corpus.is_dir() else None, engine=started["engine"])
    except QAError as exc:
        raise UserError(str(exc)) from exc
    click.echo("qa serve: starting the web server…", err=True)
    try:
        launch(demo, host=host, port=port, prevent_thread_lock=True, quiet=True)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc}; pick another with --port or QA_PORT") from exc
    click.echo(f"web chat on http://{host}:{port} (Ctrl+C to stop)", err=True)
    demo.block_thread()


def _check_port(host: str, port: int) -> None:
    """UserError when ``host:port`` is taken (Gradio would suggest GRADIO_SERVER_PORT, which ``qa serve`` ignores)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host or QA_HOST") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port}: {exc.strerror}; pick another port with --port or QA_PORT"
            ) from exc
