"""``qa serve --ray``: the JSON API answered by Ray Serve replicas behind one HTTP endpoint.

Each replica is an engine over the index folder (a path every node sees) and
the single-process server's JSON API, ``ui.api.create_api``, handed to Serve
through ``serve.ingress``: ``POST /v1/answer``, ``GET /v1/index`` and
``POST /v1/feedback`` keep their contract, errors and schema. A replica
memory-maps the index and, like any engine, checks ``CURRENT`` on each
question, so a rebuilt index (``qa index build``, with or without ``--ray``)
is answered from by every replica once it has loaded. Responses carry an
``X-QA-Replica`` header naming the replica that answered.

Serve's HTTP proxy runs on the head node only (one endpoint); the replicas go
wherever the cluster has CPUs. Ray is imported only when this runs.

>>> run_on_ray("index", address="auto", replicas=2, port=8000)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from qa import QAError

log = logging.getLogger(__name__)

APP_NAME = "qa"
REPLICA_HEADER = "X-QA-Replica"


class AnswerReplica:
    """One Serve replica: an engine over the shared index, loaded and warmed before it takes requests."""

    def __init__(self, index: str, data: str | None = None) -> None:
        from qa import get_engine
        from qa.embed import prepare_concurrent
        from qa.feedback import FeedbackStore
        from ui.service import ChatService

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        engine = get_engine(index)
        engine.retriever()
        engine.answer("How does this work?")  # the first real question then costs what later ones do
        prepare_concurrent()  # a replica answers several questions at once
        feedback = FeedbackStore(data, index=index) if data is not None else None
        self.service = ChatService(engine, feedback=feedback)
        self.replica = _replica_name()

    def __serve_build_asgi_app__(self) -> Any:
        """The single-process server's JSON API over this replica's engine (Serve calls it after ``__init__``)."""
        from starlette.requests import Request

        from ui.api import create_api

        app = create_api(self.service)
        replica = self.replica

        @app.middleware("http")
        async def name_the_replica(request: Request, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = replica
            return response

        return app


def _replica_name() -> str:
    from ray import serve

    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a replica (a test calling the class directly)
        return f"pid-{os.getpid()}"


def application(
    index: str | os.PathLike[str],
    *,
    replicas: int = 1,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    cpus_per_replica: float = 1.0,
    concurrency: int | None = None,
    data: str | os.PathLike[str] | None = None,
) -> Any:
    """The Serve application: ``replicas`` answer replicas, or between the autoscaling bounds when given.

    ``concurrency``: questions one replica answers at once (default
    ``$QA_CONCURRENCY`` or 8, as the single-process server).
    """
    from ray import serve

    from ui.service import concurrency as default_concurrency

    if replicas < 1:
        raise QAError(f"--replicas must be at least 1, not {replicas}")
    options: dict[str, Any] = {
        "name": "AnswerReplica",
        "ray_actor_options": {"num_cpus": cpus_per_replica},
        "max_ongoing_requests": concurrency or default_concurrency(),
        # A replica going away waits until its questions in flight are answered, checking every 0.5 s;
        # it waits one period before its first check, so Serve's default of 2 s adds 2 s to every stop.
        "graceful_shutdown_wait_loop_s": 0.5,
    }
    if min_replicas is not None or max_replicas is not None:
        low, high = min_replicas if min_replicas is not None else 1, max_replicas or max(replicas, min_replicas or 1)
        if not low <= replicas <= high:
            raise QAError(f"--replicas {replicas} must lie within the autoscaling bounds {low}-{high}")
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "initial_replicas": replicas}
    else:
        options["num_replicas"] = replicas
    deployment = serve.deployment(**options)(serve.ingress()(AnswerReplica))
    return deployment.bind(str(Path(index).resolve()), str(Path(data).resolve()) if data is not None else None)


def run_on_ray(
    index: str | os.PathLike[str],
    *,
    address: str = "auto",
    host: str = "127.0.0.1",
    port: int = 8000,
    **options: Any,
) -> str:
    """Deploy the answer replicas on the cluster at ``address``; returns the API's URL once every replica is up.

    ``options`` are :func:`application`'s. The deployment stays until
    :func:`stop_on_ray` (or the cluster stops). Serve, when already running on
    the cluster, keeps its own ``host`` and ``port``.
    """
    from qa.cluster import ClusterError, connect

    connect(address)
    from ray import serve

    app = application(index, **options)
    try:
        # One HTTP proxy, on the head node: one endpoint, whichever node a replica runs on.
        # Warnings only: at INFO every request's line would come back to this terminal (log_to_driver);
        # Ray's session logs folder keeps the replicas' own logs.
        quiet = {"log_level": "WARNING", "enable_access_log": False}
        serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly", logging_config=quiet)
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False, logging_config=quiet)
    except Exception as exc:  # Serve raises RuntimeError, RayError and its own types
        raise ClusterError(f"cannot start the answer replicas on Ray: {str(exc).strip().splitlines()[0]}") from exc
    return f"http://{host}:{port}"


def stop_on_ray() -> None:
    """Remove the answer replicas from the cluster, and Serve itself when no other application runs on it.

    (Serve keeps the HTTP options it started with: a later ``run_on_ray`` with another port needs a fresh
    Serve.)
    """
    from ray import serve

    serve.delete(APP_NAME)
    if not serve.status().applications:
        serve.shutdown()


def serve_on_ray(index: Path, corpus: Path, address: str, **options: Any) -> None:
    """``qa serve --ray``: build the index when stale, deploy the replicas, wait for Ctrl-C, remove them."""
    import click

    from qa import build_index
    from qa.cli import UserError

    deploying = False
    try:
        if corpus.is_dir():
            build_index(corpus, index)
        click.echo(f"qa serve: starting the answer replicas on Ray ({address})…", err=True)
        deploying = True
        url = run_on_ray(index, address=address, **options)
        click.echo(f"qa serve: JSON API on {url}/v1 (Ray Serve; Ctrl+C to stop)", err=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except QAError as exc:
        raise UserError(str(exc)) from exc
    finally:
        if deploying:
            click.echo("qa serve: removing the answer replicas…", err=True)
            stop_on_ray()
