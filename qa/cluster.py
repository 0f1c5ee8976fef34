"""Index builds on a Ray cluster: files read and split by Ray tasks, texts embedded by an actor pool (Ray Data).

``build_index_on_ray`` is ``qa.build.build_index`` with its two heavy steps
run by :class:`RaySteps`; everything else (what to reuse, BM25, the search
index, the manifest and checksums, the atomic switch-over) happens in the
calling process, the driver, exactly as in a local build, so both write the
same index. Ray is an optional extra (``pip install -e ".[cluster]"``) and is
imported only here, when a build asks for it.

- Reading: the new and changed files go to Ray tasks, a few dozen files each;
  each task reads by path, so every node must see the corpus at the same path.
- Embedding: the texts to embed (only those, as in any incremental build) go
  through ``Dataset.map_batches`` on a pool of actors, each holding the index's
  encoder export (the int8 document model, whose vectors do not depend on the
  batch) on one CPU; the pool has one actor per CPU of the cluster unless told.
  On a cluster with GPUs, where this process's onnxruntime runs CUDA, the pool
  has one actor per GPU instead, each running the model with CUDA (``gpus``).
- Faults: a task or actor whose worker dies is retried (``retries`` times);
  past that the build stops with one sentence, and the previous index stays
  live, since nothing was switched over.

>>> build_index_on_ray("corpus", "index", address="local")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from qa.build import SplitFile, build_index, split_file
from qa.embed import cuda_available, default_model, get_encoder
from qa.progress import EmbeddedLog
from qa.readers.sandbox import ReaderSandbox
from qa.types import Manifest, QAError

log = logging.getLogger(__name__)

FILES_PER_TASK = 16  # files one reading task takes: a round trip per few dozen milliseconds of splitting
TEXTS_PER_BATCH = 512  # most texts an embedding actor takes at a time (it sub-batches by length, as a local build)
# The last batches shrink, down to this many texts, so that the actors finish together (see ``batch_sizes``).
SMALLEST_BATCH = 64
RETRIES = 3  # times a task, or an actor and its batch, is retried after its worker dies


_Items = TypeVar("_Items", Sequence[Any], np.ndarray)


class ClusterError(QAError):
    """The Ray cluster cannot be reached, or a build's work on it failed past its retries."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ClusterError('Ray is not installed; install the cluster extra: pip install -e ".[cluster]"') from exc
    return ray


def connect(address: str = "auto") -> bool:
    """Connect this process to a Ray cluster; True when this call connected (and should disconnect).

    ``address``: ``auto`` (the cluster ``ray start`` started on this machine,
    or ``$RAY_ADDRESS``), ``local`` (a Ray started in this process, on this
    machine's CPUs, loopback only), ``HOST:PORT`` (a head node's GCS) or
    ``ray://HOST:PORT`` (Ray Client). A process already connected keeps its
    connection.
    """
    if address == "local":
        # Else Ray on Linux binds its processes to the machine's network address, not loopback
        # (read when Ray is imported, and by the processes it starts).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = _ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": False, "namespace": "qa"}
    if address == "local":
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError and its own errors
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {_first_line(exc)}") from exc
    _quiet_ray_data()
    return True


def _quiet_ray_data() -> None:
    """Ray Data's own progress bars and start-up lines off: the build logs its progress as a local one does."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not even "Progress bars disabled"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


_sandbox: ReaderSandbox | None = None  # a Ray worker's reader process, kept for the next tasks it runs


def _read_files(files: list[tuple[str, str]]) -> list[SplitFile]:
    """A Ray task's work: ``split_file`` of each file, in order, its bytes read under the sandbox's budgets."""
    global _sandbox
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if _sandbox is None:
        _sandbox = ReaderSandbox()
    return [split_file(doc_id, path, _sandbox.read) for doc_id, path in files]


class _Embedder:
    """An actor of the embedding pool: the index's encoder export, loaded once, on this actor's CPUs.

    ``RaySteps.embed`` sets ``model``, ``export`` and ``threads`` on a subclass.
    """

    model: str
    export: str
    threads: int
    device: str  # "gpu": the model runs with CUDA where this worker's onnxruntime has it (qa.encoder.providers)

    def __init__(self) -> None:
        # Before the model loads: its sessions use this many threads on this device (qa.encoder).
        os.environ["QA_THREADS"] = str(self.threads)
        os.environ["QA_DEVICE"] = self.device
        self.encoder = get_encoder(self.model, self.export)
        self.encoder.encode(["Loaded."], documents=True)  # the document model loads now, not in the first batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        vectors = self.encoder.encode(texts, documents=True, workers=self.threads)
        return {"row": batch["row"], "vector": vectors}


def batch_sizes(items: int, largest: int, workers: int, smallest: int = SMALLEST_BATCH) -> list[int]:
    """How many items each batch for ``workers`` side by side holds, in order: ``largest`` until the end nears.

    A batch holds at most the items left ÷ (2 × ``workers``), and at least
    ``smallest``: the last batches are small and quick (the texts come longest
    first), so no worker computes alone at the end while the others wait.

    >>> batch_sizes(3000, 512, 2)
    [512, 512, 494, 370, 278, 208, 156, 117, 88, 66, 64, 64, 64, 7]
    """
    sizes = []
    left = items
    while left > 0:
        size = min(largest, max(smallest, left // (2 * workers)), left)
        sizes.append(size)
        left -= size
    return sizes


def _cut(items: _Items, sizes: list[int]) -> Iterator[_Items]:
    """``items`` in consecutive runs of ``sizes``."""
    start = 0
    for size in sizes:
        yield items[start : start + size]
        start += size


class RaySteps:
    """A build's reading and embedding on the Ray cluster this process is connected to (``qa.build.BuildSteps``).

    ``actors``: the embedding pool's size (default: the cluster's GPUs when
    the actors use them, else its CPUs divided by ``cpus_per_actor``).
    ``gpus``: each actor takes one GPU and runs the model with CUDA (None: when
    the cluster has GPUs and this process's onnxruntime has CUDA; an actor
    whose onnxruntime lacks it runs on its CPU, with a warning).
    ``retries``: how often a reading task, or an embedding actor and its
    batch, is retried after its worker dies.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        actors: int | None = None,
        cpus_per_actor: int = 1,
        retries: int = RETRIES,
        files_per_task: int = FILES_PER_TASK,
        texts_per_batch: int = TEXTS_PER_BATCH,
        gpus: bool | None = None,
    ) -> None:
        for name, value, least in (
            ("actors", actors, 1), ("cpus_per_actor", cpus_per_actor, 1), ("retries", retries, 0),
            ("files_per_task", files_per_task, 1), ("texts_per_batch", texts_per_batch, 1),
        ):  # fmt: skip
            if value is not None and value < least:
                raise ValueError(f"{name} must be at least {least}, not {value}")
        self.model = model or default_model()
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.retries = retries
        self.files_per_task = files_per_task
        self.texts_per_batch = texts_per_batch
        self.gpus = gpus

    def on_gpus(self) -> bool:
        """Whether each embedding actor takes a GPU: as asked, else when the cluster has GPUs and CUDA runs here."""
        if self.gpus is not None:
            return self.gpus
        return _ray().cluster_resources().get("GPU", 0) >= 1 and cuda_available()

    def pool_size(self, gpus: bool | None = None) -> int:
        """The embedding actors to start: as asked, else one per GPU or per ``cpus_per_actor`` CPUs of the cluster.

        ``gpus``: whether the actors take GPUs, if already known (else :meth:`on_gpus`).
        """
        if self.actors is not None:
            return self.actors
        if gpus is None:
            gpus = self.on_gpus()
        resources = _ray().cluster_resources()
        if gpus:
            return max(1, int(resources.get("GPU", 1)))
        return max(1, int(resources.get("CPU", 1)) // self.cpus_per_actor)

    def split(self, files: Sequence[tuple[str, str]]) -> Iterator[SplitFile]:
        """Each file read and split by a Ray task (``files_per_task`` a task, fewer at the end), yielded in order.

        Tasks run ahead of what has been yielded by a window of four per CPU, so a
        huge corpus never has all its splits waiting in the object store.
        """
        if not files:
            return
        ray = _ray()
        read = ray.remote(max_retries=self.retries, num_cpus=1)(_read_files)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        chunks = [list(c) for c in _cut(files, batch_sizes(len(files), self.files_per_task, cpus, smallest=1))]
        window = max(2, 4 * cpus)
        pending: deque[Any] = deque()
        submitted = 0
        while submitted < len(chunks) or pending:
            while submitted < len(chunks) and len(pending) < window:
                pending.append(read.remote(chunks[submitted]))
                submitted += 1
            try:
                results = ray.get(pending.popleft())
            except ray.exceptions.RayError as exc:
                raise _failed("reading the files", exc) from exc
            yield from results

    def embed(self, texts: list[str], on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Each text's document vector, by the actor pool; rows in the order of ``texts``."""
        encoder = get_encoder(self.model)
        out = np.zeros((len(texts), encoder.dimension), dtype=np.float32)
        if not texts:
            return out
        _ray()  # a clear error when Ray is missing
        import pyarrow as pa  # Ray Data's own dependency
        import ray
        import ray.data

        # Texts of similar length share a batch (little padding), longest first, and the last batches
        # are smaller (batch_sizes): the last handed out are the quickest, so no actor is left with a
        # long one while the others wait. A block is one batch, the unit an actor takes. "row" puts
        # each vector back in place.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        gpu = self.on_gpus()
        actors = min(self.pool_size(gpu), -(-len(texts) // self.texts_per_batch))
        blocks = [
            pa.table({"row": rows.astype(np.int64), "text": [texts[i] for i in rows]})
            for rows in _cut(order, batch_sizes(len(texts), self.texts_per_batch, actors))
        ]
        # The encoder's settings as class attributes, not constructor arguments: those would sit in
        # the object store, and an actor restarted after they left it could not start.
        embedder = type(
            "_Embedder",
            (_Embedder,),
            {
                "model": self.model,
                "export": encoder.export_id,
                "threads": self.cpus_per_actor,
                "device": "gpu" if gpu else "cpu",
            },
        )
        with warnings.catch_warnings():
            # max_restarts and max_task_retries still reach the actors as remote arguments in Ray 2.60
            # (pinned); map_batches has no named parameter for them yet, and warns.
            warnings.simplefilter("ignore")
            dataset = ray.data.from_arrow(blocks).map_batches(
                embedder,
                # Each block whole. Ray Data requires a batch size with GPUs, and then bundles the small
                # last blocks into one: GPU actors get batches of texts_per_batch throughout.
                batch_size=self.texts_per_batch if gpu else None,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=self.cpus_per_actor,
                num_gpus=1 if gpu else None,
                max_restarts=self.retries,
                max_task_retries=self.retries,
            )
        log.info("embedding %d texts on Ray: %d actors, a %s each", len(texts), actors, "GPU" if gpu else "CPU")
        logged = EmbeddedLog(log, len(texts))
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                out[batch["row"]] = batch["vector"]
                if on_progress is not None:
                    on_progress(len(batch["row"]))
                logged.add(len(batch["row"]))
        except ray.exceptions.RayError as exc:
            raise _failed("embedding", exc) from exc
        if logged.done != len(texts):
            raise ClusterError(
                f"the Ray build embedded {logged.done} of {len(texts)} texts; the previous index stays live"
            )
        return out


def _failed(step: str, exc: BaseException) -> ClusterError:
    """One sentence for a step that failed past its retries."""
    return ClusterError(
        f"the Ray build failed while {step} ({type(exc).__name__}: {_first_line(exc)}); the previous index stays live"
    )


def build_index_on_ray(
    corpus: str | os.PathLike[str],
    index: str | os.PathLike[str],
    *,
    address: str = "auto",
    actors: int | None = None,
    force: bool = False,
    model: str | None = None,
    retries: int = RETRIES,
    texts_per_batch: int = TEXTS_PER_BATCH,
    gpus: bool | None = None,
) -> Manifest:
    """``qa.build.build_index`` with reading and embedding on a Ray cluster; the same index, written here.

    ``address`` as :func:`connect` takes it; a process already connected to
    Ray uses that connection. A fresh index is a no-op that never connects.
    ``actors``, ``retries``, ``texts_per_batch`` and ``gpus`` as :class:`RaySteps` takes them.
    """
    steps = _ConnectingSteps(
        address, RaySteps(model, actors=actors, retries=retries, texts_per_batch=texts_per_batch, gpus=gpus)
    )
    try:
        return build_index(corpus, index, force=force, model=model, steps=steps)
    finally:
        steps.disconnect()


class _ConnectingSteps:
    """:class:`RaySteps` that connect on first use (a no-op build needs no cluster) and disconnect after."""

    def __init__(self, address: str, steps: RaySteps) -> None:
        self.address = address
        self.steps = steps
        self._connected = False
        self._owned = False

    def _connect(self) -> None:
        if not self._connected:
            self._owned = connect(self.address)
            self._connected = True

    def split(self, files: Sequence[tuple[str, str]]) -> Iterator[SplitFile]:
        if files:
            self._connect()
        return self.steps.split(files)

    def embed(self, texts: list[str], on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        if texts:
            self._connect()
        return self.steps.embed(texts, on_progress)

    def disconnect(self) -> None:
        if self._owned:
            _ray().shutdown()
            self._owned = False
