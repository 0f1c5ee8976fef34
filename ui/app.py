"""The web chat: ``build_app(...) -> gr.Blocks``, the server around it, and the ``qa serve`` command.

Importing this module does no work and does not import Gradio (``qa --help``
and ``qa ask`` load it through the ``qa.commands`` entry point). The model and
index load once, in :func:`build_app`, before the app serves anyone.

One server on one port: the JSON API (:mod:`ui.api`, ``/v1``, ``/openapi.json``,
``/docs``) is a FastAPI app, the chat is mounted on it at ``/``, and
:class:`ui.limits.RequestLimits` stands in front of both.

>>> demo = build_app(index="index", corpus="corpus")   # doctest: +SKIP
>>> launch(demo, host="127.0.0.1", port=7860)           # doctest: +SKIP
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from qa import Answer, QAError, QuestionError
from qa.cli import CORPUS, DATA, INDEX, UserError
from ui import render
from ui.service import ChatService, concurrency, start_engine

if TYPE_CHECKING:
    import gradio as gr
    from fastapi import FastAPI

    from qa import Engine

log = logging.getLogger(__name__)

__all__ = ["ChatService", "build_app", "concurrency", "launch", "serve", "server_app", "start_engine"]

MAX_SAVED_TURNS = 30  # turns of a chat kept in the browser (localStorage holds a few MB)
SAVED_CHAT_KEY = "qa-chat-v1"  # the browser's localStorage key; a new layout of saved turns gets a new key
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
#qa-sources strong.qa-phrase { font-weight: 700; text-decoration: underline; text-decoration-thickness: 2px; }
#qa-sources mark.related { background: transparent; color: inherit; border-bottom: 2px dotted #999; }
#qa-sources .qa-source.related { background: transparent; }
#qa-sources .abstained .qa-heading { color: #a15c00; }
#qa-sources .qa-confidence-line { margin: 0 0 0.5rem; }
#qa-sources details.qa-offsets { display: inline; margin-left: 0.4rem; font-size: 0.8rem; }
#qa-sources details.qa-offsets summary { display: inline; cursor: pointer; }
.qa-confidence { font-weight: 600; text-decoration: underline dotted; cursor: help; }
#qa-chat details.qa-details { font-size: 0.85em; color: var(--body-text-color-subdued); }
#qa-transcript, #qa-saved-turns { display: none !important; }
#qa-sources sup.qa-mark-rank { font-size: 0.7em; font-weight: 700; margin-left: 1px; }
#qa-status { font-size: 0.85rem; }
#qa-sources img.qa-page { display: block; max-width: 100%; height: auto; margin: 0.3rem 0 0.5rem;
  border: 1px solid var(--border-color-primary); }
"""

# The side panel can be long: bring the first cited sentence into view after each answer.
SCROLL_TO_HIGHLIGHT = """() => {
  const mark = document.querySelector('#qa-sources mark.answer, #qa-sources mark.related');
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


DOWNLOAD_CHAT = """(text) => {
  if (!text) return;
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([text], {type: 'text/markdown;charset=utf-8'}));
  link.download = 'chat.md';
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}"""

# The service behind each app, for launch(): it serves the same engine over JSON.
_services: weakref.WeakKeyDictionary[Any, ChatService] = weakref.WeakKeyDictionary()


def _friendly(exc: Exception) -> str:
    message = str(exc).strip() or "something went wrong"
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


def _turn(question: str, history: Sequence[str], answer: Answer, message: int) -> dict[str, Any]:
    """One answered question as the chat keeps it (and the browser saves it): plain JSON data."""
    return {"question": question, "history": list(history), "answer": answer.to_dict(), "message": message}


def _restored(saved: Any) -> list[tuple[str, list[str], Answer]]:
    """The turns a browser saved, checked field by field; anything malformed is dropped, never trusted.

    The browser's copy is the client's: only its text and numbers are used, and
    every message is rendered again from them (a saved message naming a file is
    never shown, since no message is taken as saved).
    """
    if not isinstance(saved, list):
        return []
    turns = []
    for item in saved[-MAX_SAVED_TURNS:]:
        try:
            if not isinstance(item, dict) or not isinstance(item.get("question"), str):
                raise ValueError("not a turn")
            history = item.get("history", [])
            if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
                raise ValueError("history is not a list of text")
            turns.append((item["question"], history, Answer.from_dict(item.get("answer"))))
        except ValueError as exc:
            log.info("a saved chat turn is malformed and left out: %s", exc)
    return turns


def build_app(
    index: str | os.PathLike[str] | None = None,
    corpus: str | os.PathLike[str] | None = None,
    *,
    examples: Sequence[str] | None = None,
    k: int = 3,
    watch: bool = False,
    engine: Engine | None = None,
    data: str | os.PathLike[str] | None = None,
    answers_from: str | None = None,
) -> gr.Blocks:
    """The web chat for an index folder (built from ``corpus`` when missing or stale).

    Loads the model and index now, so the first question is as fast as later
    ones. ``examples`` default to questions made from the corpus
    (:meth:`ChatService.examples`). ``watch`` rebuilds the index when the corpus changes and
    swaps to it without a restart. ``engine``, when given, is a started engine
    (see :func:`start_engine`) and the other arguments but ``examples``, ``k``
    and ``data`` are ignored. ``data`` is the folder of the ratings file
    (default ``$QA_DATA`` or ``./data``; never the index folder). ``answers_from``
    is the URL of another server of the JSON API (Ray Serve replicas) that
    answers; this one then shows the passages from the same index. Serve with
    :func:`launch` (it adds the page's CSS and the JSON API).
    """
    from qa.feedback import FeedbackStore

    gr = _gradio()
    engine = engine if engine is not None else start_engine(index, corpus, watch=watch)
    service = ChatService(engine, feedback=FeedbackStore(data, index=engine.index), answers_from=answers_from)
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

    def show(turns: list[dict[str, Any]], answer: Answer | None) -> tuple[list[dict[str, Any]], str]:
        """The chat's messages and the panel of ``answer``, rendered from the turns (never from saved markup)."""
        messages: list[dict[str, Any]] = []
        for t in turns:
            result = Answer.from_dict(t["answer"])
            messages += [
                {"role": "user", "content": render.chat_question(t["question"])},
                {"role": "assistant", "content": render.chat_reply(result)},
            ]
        if answer is None:
            return messages, EMPTY_PANEL
        return messages, render.panel_html(render.panel(answer, service.passage_text, service.page_image))

    def respond(
        question: str,
        chat: list[dict[str, Any]] | None,
        asked: list[str] | None,
        turns: list[dict[str, Any]] | None,
    ) -> tuple[Any, ...]:
        # ``chat`` is server-side state, never the client's copy of the chat: a client-supplied
        # history once made the server open a file named in it.
        asked = list(asked or [])
        chat = list(chat or [])
        turns = list(turns or [])
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
            return chat, gr.skip(), gr.skip(), asked, gr.skip(), chat, turns
        turns = [*turns, _turn(question.strip(), asked, result, len(chat) + 1)]
        chat = [
            *chat,
            {"role": "user", "content": render.chat_question(question)},
            {"role": "assistant", "content": render.chat_reply(result)},
        ]
        panel = render.panel_html(render.panel(result, service.passage_text, service.page_image))
        status = service.status_markdown(after_answer=True)
        return chat, panel, status, [*asked, question.strip()], "", chat, turns

    def answer(question: str, history: list[str] | None = None, k: int = 3) -> dict[str, Any]:
        """Answer a question from the indexed sources.

        history: the chat's earlier questions, oldest first. k: number of sources (1-20).
        Returns the answer (text, abstained, confidence, confidence_label, phrase, index_version)
        and its sources (doc, start, end, text, score, passage_start, passage_end, page, heading), best first.
        """
        return ask_or_explain(question, history or [], k).to_dict()

    def clear() -> tuple[Any, ...]:
        hidden = gr.update(visible=False)
        return [], EMPTY_PANEL, [], "", [], [], [], None, hidden, hidden, ""

    def save(turns: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], int]:
        """What the browser keeps: the last turns, as data (questions and answers, no markup); and how many."""
        kept = [{k: t[k] for k in ("question", "history", "answer")} for t in (turns or [])[-MAX_SAVED_TURNS:]]
        return kept, len(kept)

    def restore(saved: Any) -> tuple[Any, ...]:
        """The chat saved in this browser, shown again after a reload or in a second tab."""
        turns: list[dict[str, Any]] = []
        for question, history, result in _restored(saved):
            turns.append(_turn(question, history, result, 2 * len(turns) + 1))
        last = Answer.from_dict(turns[-1]["answer"]) if turns else None
        messages, panel = show(turns, last)
        asked = [t["question"] for t in turns]
        return messages, panel, asked, messages, turns, service.status_markdown()

    def rate(data: Any, turns: list[dict[str, Any]] | None) -> tuple[Any, ...]:
        """A thumbs up or down on an answer: stored at once; a comment box opens for an optional note."""
        index = data.index[0] if isinstance(data.index, list | tuple) else data.index
        liked = data.liked
        if isinstance(liked, str):
            liked = {"like": True, "dislike": False}.get(liked.lower())  # type: ignore[assignment]
        turn = next((t for t in turns or [] if t["message"] == index), None)
        skip = gr.skip()
        if turn is None or not isinstance(liked, bool):
            return skip, skip, skip, skip
        from qa.feedback import FeedbackError

        try:
            rating_id = service.rate(Answer.from_dict(turn["answer"]), 1 if liked else -1, turn["history"])
        except (FeedbackError, ValueError) as exc:
            log.warning("could not store a rating: %s", exc)
            return None, gr.update(visible=False), gr.update(visible=False), render.escape_markdown(_friendly(exc))
        said = "helpful" if liked else "wrong"
        note = render.escape_markdown(f"Thank you: the answer is saved as {said}. Add a comment if you like.")
        box = gr.update(visible=True, value="", label=f"Comment on this {said} answer (optional)")
        return rating_id, box, gr.update(visible=True), note

    # Gradio hands the like event to the parameter typed gr.LikeData (gr is imported lazily, so set here).
    rate.__annotations__["data"] = gr.LikeData

    def send_comment(text: str, rating_id: int | None) -> tuple[Any, ...]:
        from qa.feedback import FeedbackError

        hidden = gr.update(visible=False)
        if rating_id is None:
            return hidden, hidden, ""
        try:
            service.comment(int(rating_id), text or "")
        except (FeedbackError, ValueError) as exc:
            return gr.skip(), gr.skip(), render.escape_markdown(_friendly(exc))
        return hidden, hidden, "Comment saved\\. Thank you\\."

    def download(turns: list[dict[str, Any]] | None) -> str:
        return render.transcript([(t["question"], Answer.from_dict(t["answer"])) for t in turns or []])

    with gr.Blocks(title="Ask the sources", analytics_enabled=False) as demo:
        gr.Markdown("## Ask the sources\nAnswers come only from the indexed documents, citing the exact sentences.")
        status = gr.Markdown(service.status_markdown(), elem_id="qa-status")
        asked = gr.State([])
        messages = gr.State([])
        turns = gr.State([])  # answered questions as data: what ratings, the saved chat and downloads read
        rating_id = gr.State(None)
        saved = gr.BrowserState([], storage_key=SAVED_CHAT_KEY, secret=SAVED_CHAT_KEY)
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
                    feedback_options=("Like", "Dislike"),
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
                feedback_note = gr.Markdown("", elem_id="qa-feedback-note")
                with gr.Row():
                    comment = gr.Textbox(
                        visible=False, lines=1, max_lines=4, scale=5, elem_id="qa-comment",
                        placeholder="What was right or wrong?",
                    )  # fmt: skip
                    send = gr.Button("Send comment", visible=False, scale=1, size="sm", elem_id="qa-send-comment")
                with gr.Row():
                    clear_button = gr.Button("Clear chat", variant="secondary", size="sm", elem_id="qa-clear")
                    download_button = gr.Button("Download chat", variant="secondary", size="sm", elem_id="qa-download")
                transcript = gr.Textbox(visible="hidden", elem_id="qa-transcript", show_label=False)
                saved_turns = gr.Number(0, visible="hidden", elem_id="qa-saved-turns", show_label=False, precision=0)
                ask_examples = (
                    gr.Examples(example_questions, inputs=[question], label="Example questions", elem_id="qa-examples")
                    if example_questions
                    else None
                )
            with gr.Column(scale=2):
                gr.Markdown("### Sources")
                panel = gr.HTML(EMPTY_PANEL, elem_id="qa-sources")

        outputs = [chatbot, panel, status, asked, question, messages, turns]
        # Questions are independent: several run at once (each reads the one index version it captured).
        chat_io: dict[str, Any] = {
            "inputs": [question, messages, asked, turns], "outputs": outputs, "concurrency_limit": concurrency(),
            "concurrency_id": "answer",
        }  # fmt: skip
        private: dict[str, Any] = {"api_visibility": "private"}
        keep: dict[str, Any] = {"fn": save, "inputs": [turns], "outputs": [saved, saved_turns], **private}
        scroll: dict[str, Any] = {"fn": None, "js": SCROLL_TO_HIGHLIGHT, **private}
        question.submit(respond, api_name="chat", **chat_io).then(**keep).then(**scroll)
        ask.click(respond, **private, **chat_io).then(**keep).then(**scroll)
        if ask_examples is not None:
            ask_examples.load_input_event.then(respond, **private, **chat_io).then(**keep).then(**scroll)
        cleared = [chatbot, panel, asked, question, messages, turns, saved, rating_id, comment, send, feedback_note]
        clear_button.click(clear, outputs=cleared, **private)
        chatbot.clear(clear, outputs=cleared, **private)
        rated = [rating_id, comment, send, feedback_note]
        chatbot.like(rate, inputs=[turns], outputs=rated, **private)
        commented = {"fn": send_comment, "inputs": [comment, rating_id], "outputs": [comment, send, feedback_note]}
        send.click(**commented, **private)
        comment.submit(**commented, **private)
        download_button.click(download, inputs=[turns], outputs=[transcript], **private).then(
            fn=None, js=DOWNLOAD_CHAT, inputs=[transcript], **private
        )
        demo.load(restore, inputs=[saved], outputs=[chatbot, panel, asked, messages, turns, status], **private)
        gr.api(answer, api_name="answer", concurrency_limit=concurrency(), concurrency_id="answer")
    _services[demo] = service
    return demo


def server_app(demo: gr.Blocks) -> Any:
    """One ASGI app for ``demo``: the JSON API (:func:`ui.api.create_api`) with the chat mounted at ``/``.

    Behind :class:`ui.limits.RequestLimits`: only the chat, its API and their
    assets are served; Gradio's monitoring is off and unreachable.
    """
    gr = _gradio()
    from ui.api import create_api
    from ui.limits import GradioCalls, RequestLimits

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    # Independent questions run at once: encoding (ONNX Runtime), FAISS and numpy release the GIL,
    # and each answer reads one index version it captured, so concurrency cannot mix versions.
    demo.queue(default_concurrency_limit=concurrency())
    api: FastAPI = create_api(_services[demo])
    app = gr.mount_gradio_app(
        api,
        demo,
        path="/",
        footer_links=["api"],
        run_history=False,
        enable_monitoring=False,
        max_file_size=0,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        show_error=False,
        css=CSS,
        theme=theme,
    )
    return RequestLimits(app, gradio=GradioCalls.of(demo))


def launch(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> tuple[Any, str, str]:
    """Serve ``demo`` and its JSON API on ``host:port`` (in a thread); returns ``(app, local_url, "")``.

    ``demo.close()`` stops the server. Without ``prevent_thread_lock``, blocks
    until interrupted. OSError when the port cannot be had.
    """
    import uvicorn
    from gradio.exceptions import ServerFailedToStartError
    from gradio.http_server import Server

    app = server_app(demo)
    # As Gradio's own launch: no graceful-shutdown timeout, whose expiry logs the cancelled page streams.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = Server(config=config)
    try:
        server.run_in_thread()
    except ServerFailedToStartError as exc:
        raise OSError(f"the server did not start on {host}:{port}") from exc
    url = f"http://{'localhost' if host == '0.0.0.0' else host}:{port}/"
    # Gradio's own close() and block_thread() stop and wait on this server.
    demo.server, demo.server_name, demo.server_port = server, host, port
    demo.local_url = url  # type: ignore[assignment]
    if not quiet:
        click.echo(f"web chat on {url}", err=True)
    if not prevent_thread_lock:
        demo.block_thread()
    return app, url, ""


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
@DATA
@click.option("--watch", is_flag=True, help="Rebuild the index when corpus files change, without a restart.")
@click.option(
    "--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]",
    help="Serve the JSON API from Ray Serve replicas on the cluster at ADDRESS (as qa index build --ray takes it); "
    "the index folder must be at the same path on every node.",
)  # fmt: skip
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="With --ray: replicas.")
@click.option("--min-replicas", type=click.IntRange(min=1), help="With --ray: autoscale from this many replicas.")
@click.option("--max-replicas", type=click.IntRange(min=1), help="With --ray: autoscale up to this many replicas.")
@click.option(
    "--answers-from", metavar="URL",
    help="Answer through another server of the JSON API at URL (qa serve --ray's replicas); "
    "this one serves the chat, and its passages from the same index.",
)  # fmt: skip
def serve(
    host: str, port: int, index: Path, corpus: Path, data: Path, watch: bool, ray_address: str | None,
    replicas: int, min_replicas: int | None, max_replicas: int | None, answers_from: str | None,
) -> None:  # fmt: skip
    """Open the web chat and its JSON API on http://HOST:PORT, building the index first if missing or stale.

    The API: POST /v1/answer, GET /v1/index, POST /v1/feedback; its schema at
    /openapi.json, its docs at /docs. Ratings are kept in DATA/feedback.sqlite.
    With --ray the JSON API alone is served, by replicas on a Ray cluster (ui/ray_serve.py);
    --answers-from URL puts the web chat in front of them.
    """
    source = click.get_current_context().get_parameter_source("corpus")
    if not corpus.is_dir() and source is not click.core.ParameterSource.DEFAULT:
        raise UserError(f"corpus folder {str(corpus)!r} does not exist or is not a folder")
    if answers_from is not None and not answers_from.startswith(("http://", "https://")):
        raise UserError(
            f"--answers-from takes the URL of a qa serve or Ray Serve API (http://HOST:PORT), not {answers_from!r}"
        )
    if ray_address is not None and answers_from is not None:
        raise UserError("--ray serves the replicas' API; put the chat in front with another qa serve --answers-from")
    if ray_address is not None:
        from ui.ray_serve import serve_on_ray

        if watch:
            raise UserError("--watch rebuilds in this process; with --ray, run qa index build and the replicas follow")
        bounds = {"min_replicas": min_replicas, "max_replicas": max_replicas}
        serve_on_ray(index, corpus, ray_address, host=host, port=port, replicas=replicas, data=data, **bounds)
        return
    _check_port(host, port)  # before loading anything: a taken port fails in a second, not after the model loads
    click.echo("qa serve: loading the index and the model…", err=True)
    # Load the engine in a thread while this one imports Gradio (seconds of Python imports).
    started: dict[str, Any] = {}

    def load() -> None:
        from qa import progress
        from qa.embed import prepare_concurrent

        try:
            started["engine"] = start_engine(index, corpus if corpus.is_dir() else None, watch=watch)
            prepare_concurrent()  # a server answers several people at once: not on its first users' time
        except Exception as exc:  # re-raised below, in the main thread
            started["error"] = exc
        finally:
            progress.show_bars(False)  # the first build may draw bars; a watched rebuild logs instead

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
        demo = build_app(
            index=index, corpus=corpus if corpus.is_dir() else None, engine=started["engine"], data=data,
            answers_from=answers_from,
        )  # fmt: skip
    except QAError as exc:
        raise UserError(str(exc)) from exc
    click.echo("qa serve: starting the web server…", err=True)
    try:
        launch(demo, host=host, port=port, prevent_thread_lock=True, quiet=True)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc}; pick another with --port or QA_PORT") from exc
    click.echo(f"qa serve: JSON API on http://{host}:{port}/v1, its docs on http://{host}:{port}/docs", err=True)
    if answers_from is not None:
        click.echo(f"qa serve: answers come from {answers_from}", err=True)
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
