"""Builds and answer replicas on a real Ray cluster: two one-CPU nodes started with ``ray start``, loopback only.

One cluster serves the whole module (``tests/ray_cluster.py`` starts it and
ends its processes, only those, even when a test fails). The corpus is the
article plus 300 BBC articles (one of every seven, so every category is in).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import netns
from tests.conftest import ARTICLE, ROOT, free_port
from tests.ray_cluster import RayCluster

# Not imported here: Ray reads its authentication settings when first imported, after the cluster fixture sets them.
if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is an optional extra: pip install -e '.[cluster]'", allow_module_level=True)

SHARED = ROOT.parent / "shared"
BBC = SHARED / "data" / "bbc-news" / "bbc-fulltext.zip"
DEV_QUESTIONS = SHARED / "eval" / "dev_questions.jsonl"


def dev_questions() -> list[str]:
    lines = DEV_QUESTIONS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def bbc_names() -> list[str]:
    with zipfile.ZipFile(BBC) as z:
        return sorted(n for n in z.namelist() if n.endswith(".txt"))


def write_bbc(corpus: Path, names: list[str]) -> None:
    with zipfile.ZipFile(BBC) as z:
        for name in names:
            parts = Path(name).parts  # bbc/<category>/<nnn>.txt
            target = corpus / "bbc" / parts[-2] / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))


@pytest.fixture(scope="module")
def starting() -> Iterator[Future[RayCluster]]:
    """The two-node cluster, started in a thread so the local build runs meanwhile; ended when the module ends.

    The second node declares a GPU (for the GPU test), unless this onnxruntime runs CUDA: a build's
    actors then take the cluster's GPUs by default, and every other test expects them on CPUs.
    """
    if not BBC.is_file():
        pytest.skip(f"the BBC corpus is not at {BBC}")
    import tempfile

    from qa.encoder import cuda_available

    # Ray's session folder holds Unix sockets, whose paths must stay under 108 bytes: a short folder.
    ray_cluster = RayCluster(Path(tempfile.mkdtemp(prefix="qa-ray-", dir="/tmp")))
    with ThreadPoolExecutor(1, thread_name_prefix="ray-start") as pool:
        started = pool.submit(ray_cluster.start, gpus=0 if cuda_available() else 1)
        try:
            yield started
        finally:
            wait([started])
            ray_cluster.stop()
            shutil.rmtree(ray_cluster.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(starting: Future[RayCluster]) -> Iterator[RayCluster]:
    """The started cluster, with this process connected to it as a driver."""
    ray_cluster = starting.result()  # or the error that stopped its start
    saved = {k: os.environ.get(k) for k in ray_cluster.driver_env}
    os.environ.update(ray_cluster.driver_env)  # before Ray is first imported: it reads them then
    try:
        from qa.cluster import connect

        connect(ray_cluster.address)
        yield ray_cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-corpus") / "corpus"
    folder.mkdir()
    shutil.copy(ARTICLE, folder / ARTICLE.name)
    write_bbc(folder, bbc_names()[::7][:300])
    return folder


@pytest.fixture(scope="module")
def local_index(corpus: Path, starting: Future[RayCluster], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local build of ``corpus``, made while the cluster starts."""
    from qa import build_index

    index = tmp_path_factory.mktemp("ray-local") / "index"
    build_index(corpus, index)
    return index


@pytest.fixture(scope="module")
def ray_index(cluster: RayCluster, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qa.cluster import build_index_on_ray

    index = tmp_path_factory.mktemp("ray-built") / "index"
    build_index_on_ray(corpus, index, address=cluster.address)
    return index


def load(index: Path) -> Any:
    from qa import store

    folder = store.current_folder(index)
    assert folder is not None
    return store.load_folder(folder)


def test_a_ray_build_equals_a_local_build(local_index: Path, ray_index: Path) -> None:
    local, remote = load(local_index), load(ray_index)
    a, b = local.manifest, remote.manifest
    assert (b.documents, b.sentences, b.vectors) == (a.documents, a.sentences, a.vectors)
    assert (b.sources, b.settings, b.encoder, b.search) == (a.sources, a.settings, a.encoder, a.search)
    assert a.documents == 301 and b.build["embedded"] == a.build["embedded"] > 9000
    assert list(remote.documents) == list(local.documents)
    for doc_id in local.documents:
        assert remote.documents[doc_id] == local.documents[doc_id]
    # Every sentence: the same document, offsets, text, passage and citability.
    assert [remote.sentences[i] for i in range(len(remote.sentences))] == [
        local.sentences[i] for i in range(len(local.sentences))
    ]
    assert np.array_equal(remote.vector_keys, local.vector_keys)
    assert np.array_equal(remote.vector_sentence, local.vector_sentence)
    # The int8 document model quantises each token by itself, so a vector does not depend on its batch's
    # other texts; the float sums around it may run in another order for another batch shape (batches
    # are grouped by length, and differ between the actors and a local build): 4.5e-8 here, measured.
    difference = float(np.max(np.abs(np.asarray(remote.matrix) - np.asarray(local.matrix))))
    print(f"largest difference between a Ray and a local build's vectors: {difference:.3g}")
    assert difference <= 1e-6

    from qa.answer import Engine

    on_local, on_ray = Engine(local_index), Engine(ray_index)
    for question in dev_questions():
        x, y = on_local.answer(question), on_ray.answer(question)
        assert (y.text, y.abstained) == (x.text, x.abstained), question
        assert y.confidence == pytest.approx(x.confidence, abs=1e-5)
        assert [(s.doc, s.start, s.end) for s in y.sources] == [(s.doc, s.start, s.end) for s in x.sources]


@pytest.mark.parametrize(("texts", "actors"), [(9660, 2), (9660, 1), (37584, 16), (100, 4), (1, 2)])
def test_the_last_batches_shrink_so_the_actors_finish_together(texts: int, actors: int) -> None:
    from qa.cluster import SMALLEST_BATCH, TEXTS_PER_BATCH, batch_sizes

    sizes = batch_sizes(texts, TEXTS_PER_BATCH, actors)
    assert sum(sizes) == texts and all(0 < n <= TEXTS_PER_BATCH for n in sizes)
    assert sizes == sorted(sizes, reverse=True)  # the texts come longest first: the quickest batches last
    # At the end, while one actor takes the last batch, each other has at most a small one to finish.
    assert all(n <= SMALLEST_BATCH for n in sizes[-actors:])
    if texts > 2 * actors * TEXTS_PER_BATCH:
        assert sizes[0] == TEXTS_PER_BATCH


def on_loopback(address: str) -> bool:
    ip = ip_address(address)
    return bool((getattr(ip, "ipv4_mapped", None) or ip).is_loopback)  # ::ffff:127.0.0.2 too


def test_nothing_the_cluster_listens_on_can_be_reached_from_another_machine(cluster: RayCluster) -> None:
    """Ray 2.60 listens on every interface for node addresses other than 127.0.0.1 (``tests/ray_cluster.py``).

    ``make test`` runs the suite in a network namespace of its own whose one
    interface is loopback (``tests/netns.py``), so even those listeners are
    loopback only.
    """
    listening = cluster.listening()
    assert len({port for _, port in listening}) >= 3, listening  # at least the GCS and each node's raylet
    everywhere = sorted(f"{address}:{port}" for address, port in listening if not on_loopback(address))
    if everywhere and not netns.inside():
        pytest.skip(f"{len(everywhere)} Ray listeners on every interface: run python -m tests.netns pytest")
    if everywhere:
        assert netns.interfaces() == ["lo"], everywhere


class _KillOnProgress(logging.Handler):
    """Kills every embedding actor's process when the Ray build logs its first progress line."""

    def __init__(self, cluster: RayCluster) -> None:
        super().__init__(logging.INFO)
        self.cluster = cluster
        self.killed: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.killed or not record.getMessage().startswith("embedded "):
            return
        self.killed = self.cluster.processes("_Embedder")
        assert self.killed, "no embedding actor process found"
        for pid in self.killed:
            os.kill(pid, signal.SIGKILL)


def incremental_case(corpus: Path, index: Path, tmp: Path) -> tuple[Path, Path]:
    """A copy of the corpus with 20 more BBC articles, and a copy of ``index`` to update for it."""
    grown = tmp / "corpus"
    shutil.copytree(corpus, grown)
    write_bbc(grown, bbc_names()[3::7][:20])  # none of them among the 300
    copy = tmp / "index"
    shutil.copytree(index, copy, symlinks=True)
    return grown, copy


def killing_an_actor(cluster: RayCluster) -> Any:
    handler = _KillOnProgress(cluster)
    logger = logging.getLogger("qa.cluster")
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)

    class Restore:
        def __enter__(self) -> _KillOnProgress:
            return handler

        def __exit__(self, *exc: object) -> None:
            logger.removeHandler(handler)
            logger.setLevel(previous)

    return Restore()


def test_a_worker_killed_during_a_build_past_its_retries_fails_in_one_sentence(
    cluster: RayCluster, corpus: Path, ray_index: Path, tmp_path: Path
) -> None:
    from qa import store
    from qa.cluster import ClusterError, build_index_on_ray

    grown, index = incremental_case(corpus, ray_index, tmp_path)
    before = store.current_folder(index)
    with killing_an_actor(cluster) as kill, pytest.raises(ClusterError) as failed:
        build_index_on_ray(grown, index, address=cluster.address, retries=0, texts_per_batch=32)
    assert kill.killed
    message = str(failed.value)
    assert "\n" not in message and message.startswith("the Ray build failed while embedding")
    assert message.endswith("the previous index stays live")
    assert store.current_folder(index) == before
    from qa.answer import Engine

    assert Engine(index).answer("Who is Carlos Ghosn?").index_version == load(ray_index).manifest.version


def test_a_worker_killed_during_a_build_is_retried_and_the_index_equals_a_local_one(
    cluster: RayCluster, corpus: Path, ray_index: Path, local_index: Path, tmp_path: Path
) -> None:
    from qa import build_index
    from qa.cluster import build_index_on_ray

    grown, index = incremental_case(corpus, ray_index, tmp_path / "ray")
    with killing_an_actor(cluster) as kill:
        manifest = build_index_on_ray(grown, index, address=cluster.address, texts_per_batch=32)
    assert kill.killed
    # Incremental: only the new articles' texts went to the actors.
    assert manifest.build["added"] == 20 and manifest.build["unchanged"] == 301
    assert 0 < manifest.build["embedded"] < manifest.build["reused"]
    _, local = incremental_case(corpus, local_index, tmp_path / "local")
    build_index(grown, local)
    x, y = load(local), load(index)
    assert y.manifest.sentences == x.manifest.sentences
    assert np.array_equal(y.vector_keys, x.vector_keys)
    assert float(np.max(np.abs(np.asarray(y.matrix) - np.asarray(x.matrix)))) <= 1e-6


def test_answering_on_one_machine_never_imports_ray(article_index: Path) -> None:
    code = (
        "import sys\n"
        "from qa.cli import main\n"
        f"main(['ask', 'Who is Carlos Ghosn?', '--index', {str(article_index)!r}], standalone_mode=False)\n"
        "import ui.app, ui.api\n"
        "print('RAY' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 'NO RAY')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("NO RAY")


def test_qa_index_build_ray_builds_on_the_cluster(cluster: RayCluster, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(ARTICLE, corpus / ARTICLE.name)
    qa = [sys.executable, "-m", "qa.cli", "index", "build", "--corpus", str(corpus), "--index", str(tmp_path / "index")]
    done = subprocess.run([*qa, "--ray", cluster.address, "--actors", "2", "--json"], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["documents"] == 1 and report["embedded"] > 30
    again = subprocess.run([*qa, "--ray", cluster.address], capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0 and "nothing to do" in again.stdout  # fresh: no cluster work


def test_qa_index_build_actors_without_ray_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qa.cli", "index", "build", "--index", str(tmp_path / "index"), "--actors", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "add --ray" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "qa.cli", "index", "build", "--index", str(tmp_path / "index"), "--gpu"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "add --ray" in done.stderr and not (tmp_path / "index").exists()


def test_the_build_benchmark_times_local_and_ray_builds_of_a_few_articles(cluster: RayCluster) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ray_build.py"), "--articles", "2", "--rounds", "1", "--processes",
         "--address", cluster.address],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray, 2 one-CPU workers" in done.stdout and "two workers / one:" in done.stdout
    assert done.stdout.count("the machine's cores busy") == 3
    assert done.stdout.count("CPU seconds") == 3 and "embedding actors" in done.stdout and "driver" in done.stdout


def test_qa_serve_ray_with_watch_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qa.cli", "serve", "--ray", "--watch", "--index", str(tmp_path / "index")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "run qa index build" in done.stderr and "Traceback" not in done.stderr


def serving(
    spawn: Callable[..., subprocess.Popen], command: list[str], cwd: Path
) -> tuple[subprocess.Popen, list[str]]:
    """``qa serve --ray`` started by ``spawn``, once it says its JSON API is up; its stderr lines so far."""
    server = spawn(command, cwd=cwd, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        with contextlib.suppress(ValueError, OSError):  # spawn closes the pipe when the test ends
            for line in server.stderr or ():
                lines.append(line)
                if "JSON API on" in line:
                    up.set()
        up.set()  # the server ended before it was up

    threading.Thread(target=read, daemon=True).start()
    up.wait(120)
    assert server.poll() is None and any("JSON API on" in line for line in lines), "".join(lines)[-3000:]
    return server, lines


@pytest.fixture
def no_replicas_left(cluster: RayCluster) -> Iterator[None]:
    """After the test, pass or fail: the answer replicas removed from the cluster, whose CPUs the next tests need."""
    yield
    from ray import serve

    from ui.ray_serve import APP_NAME, stop_on_ray

    if APP_NAME in serve.status().applications:
        stop_on_ray()


def test_qa_serve_ray_two_replicas_answer_400_questions_see_a_rebuild_within_5_s_and_stop_on_ctrl_c(
    cluster: RayCluster,
    corpus: Path,
    ray_index: Path,
    tmp_path: Path,
    no_replicas_left: None,
    spawn: Callable[..., subprocess.Popen],  # after no_replicas_left: the server is ended before its replicas go
) -> None:
    from qa import build_index
    from ui.ray_serve import APP_NAME, REPLICA_HEADER

    served_corpus, index, run_folder = tmp_path / "corpus", tmp_path / "index", tmp_path / "run"
    shutil.copytree(corpus, served_corpus)
    shutil.copytree(ray_index, index, symlinks=True)
    run_folder.mkdir()
    first_version = load(index).manifest.version
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Run from a folder with no ./corpus: the index is served as built, and rebuilt below by this test.
    command = [sys.executable, "-m", "qa.cli", "serve", "--ray", cluster.address, "--replicas", "2",
               "--port", str(port), "--index", str(index)]  # fmt: skip
    server, said = serving(spawn, command, run_folder)
    with urllib.request.urlopen(f"{url}/v1/index", timeout=30) as response:
        assert json.load(response)["version"] == first_version
    questions = dev_questions()
    rebuilt: dict[str, Any] = {}
    answers: list[tuple[float, str, str]] = []  # (when asked, replica, index version)
    errors: list[str] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        if i == 150:  # a rebuild in the middle: one more document, built while the replicas answer
            (served_corpus / "zorblax.txt").write_text(
                "Zorblax widgets\n\nThe Zorblax company assembles 4,321 kitchen widgets a day in Tromsø.\n",
                encoding="utf-8",
            )
            rebuilt["version"] = build_index(served_corpus, index).version
            rebuilt["at"] = time.monotonic()
        body = json.dumps({"question": questions[i % len(questions)]}).encode()
        request = urllib.request.Request(f"{url}/v1/answer", body, {"Content-Type": "application/json"})
        asked = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                replica, version = response.headers[REPLICA_HEADER], json.load(response)["index_version"]
        except (OSError, ValueError, KeyError) as exc:  # urllib's HTTPError and URLError are OSErrors
            with lock:
                errors.append(f"question {i}: {exc}")
            return
        with lock:
            answers.append((asked, replica, version))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(ask, range(400)))
        assert errors == [] and len(answers) == 400
        assert len({replica for _, replica, _ in answers}) == 2

        def seen_new() -> dict[str, float]:
            """Replica -> when it was first asked after the rebuild (each such answer is checked below)."""
            first: dict[str, float] = {}
            for asked, replica, _ in sorted(answers):
                if asked > rebuilt["at"]:
                    first.setdefault(replica, asked)
            return first

        # The 400 may end before both replicas were asked after the rebuild: ask on until they were.
        n = 400
        while len(seen_new()) < 2 and time.monotonic() < rebuilt["at"] + 5:
            list(pool.map(ask, range(n, n + 8)))
            n += 8
    assert errors == []
    after = [(asked, replica, version) for asked, replica, version in answers if asked > rebuilt["at"]]
    assert {version for _, _, version in after} == {rebuilt["version"]}, "an answer after the rebuild was stale"
    first = seen_new()
    assert len(first) == 2, "both replicas answered from the rebuilt index"
    assert max(first.values()) - rebuilt["at"] <= 5
    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=60) == 0, "".join(said)[-3000:]
    import ray.serve

    assert APP_NAME not in ray.serve.status().applications, "Ctrl-C left the replicas on the cluster"


def test_a_gpu_node_gets_one_embedding_actor_and_the_build_the_same_vectors(
    cluster: RayCluster, article_index: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The second node declares a GPU (ray start --num-gpus 1), which Ray schedules as it would a real one.
    # This onnxruntime has no CUDA, so the GPU actor runs the model on its CPU (with a warning) and its
    # vectors are a CPU's.
    from qa.cluster import RaySteps, build_index_on_ray
    from qa.encoder import cuda_available

    if cuda_available():
        pytest.skip("this onnxruntime runs CUDA, so the test cluster declares no GPU (see the starting fixture)")

    assert not RaySteps().on_gpus()  # by default only where CUDA runs: here the pool stays one actor per CPU
    assert RaySteps(gpus=True).pool_size() == 1 and RaySteps().pool_size() == 2

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(ARTICLE, corpus / ARTICLE.name)
    with caplog.at_level(logging.INFO, logger="qa.cluster"):
        build_index_on_ray(corpus, tmp_path / "gpu", address=cluster.address, gpus=True)
    assert "embedding" in caplog.text and "on Ray: 1 actors, a GPU each" in caplog.text
    local, remote = load(article_index), load(tmp_path / "gpu")  # the local build of the same article
    assert np.array_equal(remote.vector_keys, local.vector_keys)
    assert float(np.max(np.abs(np.asarray(remote.matrix) - np.asarray(local.matrix)))) <= 1e-6
