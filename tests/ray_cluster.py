"""A real two-node Ray cluster on this machine for the tests: started with ``ray start``, loopback only.

Each node is one ``ray start`` with one CPU and no dashboard, in a temporary
folder of its own. Ray on Linux rewrites ``127.0.0.1`` (and ``localhost``) as
a ``--node-ip-address`` or ``--address`` into the machine's network address,
so the nodes take other loopback addresses, which it keeps: the head
127.0.0.2, the second node 127.0.0.3. Ray 2.60 binds its gRPC servers
(raylets, GCS, dashboard agents) to loopback only for 127.0.0.1, so these
listen on every interface; keeping 127.0.0.1
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) makes ``ray start`` refuse a second
node. ``make test`` therefore runs the suite in a network namespace of its
own whose one interface is loopback (``tests/netns.py``), so that even
these listen on loopback alone; :meth:`RayCluster.listening` lists what the
cluster listens on. Clients, the driver and the tests only ever connect on loopback.

``ray stop`` would end every Ray process on the machine, another test run's
cluster included, so :meth:`RayCluster.stop` ends only this cluster's
processes, by id: those started with its temporary folder on their command
line, and their children.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HEAD_IP = "127.0.0.2"
NODE_IP = "127.0.0.3"
RAY = str(Path(sys.executable).with_name("ray"))

# pid -> (parent pid, command line, CPU ticks): process_table(). A zombie (ended, not yet reaped) has no command line.
Table = dict[int, tuple[int, str, int]]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RayCluster:
    """A head node and a second node, each ``--num-cpus 1``; :meth:`stop` ends them even mid-failure."""

    def __init__(self, folder: Path) -> None:
        # Ray's session folders hold Unix sockets, whose paths must stay under 108 bytes.
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        # Token authentication with a token of this cluster's own, whatever ~/.ray holds: a driver
        # connects with the same three variables (``driver_env``).
        token = folder / "auth_token"
        token.write_text(secrets.token_hex(32), encoding="utf-8")
        token.chmod(0o600)
        self.driver_env = {
            "RAY_TMPDIR": str(folder), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
        }  # fmt: skip
        # Ray prefers nodes without GPUs, real or declared (``gpus``), for work that takes none
        # (scheduler_avoid_gpu_nodes); 0: such work uses a node that declares one as any other.
        self.env = {**os.environ, **self.driver_env, "RAY_scheduler_avoid_gpu_nodes": "0"}
        self._pids: set[int] = set()

    def _ray_start(self, *args: str) -> None:
        common = ["--num-cpus", "1", "--object-store-memory", str(150 * 2**20), "--disable-usage-stats"]
        result = subprocess.run(
            [RAY, "start", *args, *common], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        self._remember(process_table())
        if result.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self, nodes: int = 2, gpus: int = 0) -> RayCluster:
        """The head node, then ``nodes - 1`` more (``nodes`` 1 or 2); a node that fails to start stops the rest.

        ``gpus``: GPUs the second node declares (``ray start --num-gpus``); none with ``nodes`` 1.
        """
        try:
            self._ray_start(
                "--head", "--node-ip-address", HEAD_IP, "--port", str(self.port),
                "--include-dashboard=false", "--temp-dir", str(self.folder),
                "--ray-client-server-port", str(_free_port(HEAD_IP)),  # not 10001: another run's cluster may hold it
            )  # fmt: skip
            if nodes > 1:
                self.add_node(gpus=gpus)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, ip: str = NODE_IP, gpus: int = 0) -> None:
        """Another node (the second at 127.0.0.3); ``gpus`` it declares, as ``ray start --num-gpus`` takes them."""
        declared = ["--num-gpus", str(gpus)] if gpus else []
        self._ray_start("--address", self.address, "--node-ip-address", ip, *declared)

    def _remember(self, table: Table) -> None:
        """Record this cluster's processes in ``table`` (naming its folder or with it as RAY_TMPDIR), with children.

        (Ray's client server names neither on its command line, and its parent has left by then.)
        """
        marker = f"RAY_TMPDIR={self.folder}".encode()
        roots = {pid for pid, (_, args, _) in table.items() if str(self.folder) in args or marker in _environment(pid)}
        self._pids |= roots | _descendants(table, roots | self._pids)

    def remove_node(self, ip: str = NODE_IP) -> None:
        """Stop the node at ``ip`` (the second, by default) as :meth:`stop` stops the cluster; the head goes on.

        Its processes are those naming ``ip`` on their command line (its raylet
        and log monitor) and their children; the raylet tells the GCS it leaves.
        """

        def node() -> set[int]:
            table = process_table()
            self._remember(table)
            roots = {pid for pid in self._pids if pid in table and ip in table[pid][1]}
            return roots | _descendants(table, roots)

        self._end(node)

    def stop(self) -> None:
        """End this cluster's processes, only these, by id: raylets first (SIGTERM), then SIGKILL after 3 s.

        A driver this process has connected to the cluster is disconnected
        first: Ray ends a driver whose raylet goes, and this process would end
        before the rest of the cluster did.
        """
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized() and ray.get_runtime_context().gcs_address == self.address:
            ray.shutdown()

        def every() -> set[int]:
            self._remember(process_table())  # workers and actors started since
            return set(self._pids)

        self._end(every)

    def _end(self, processes: Callable[[], set[int]]) -> None:
        """SIGTERM to the raylets among ``processes()``, then SIGKILL to them all (asked again: new children too)."""
        pids = processes()
        table = process_table()
        raylets = [pid for pid in pids if pid in table and "raylet" in table[pid][1].split(" ", 1)[0]]
        for pid in raylets:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(_alive(pid) for pid in raylets):
            time.sleep(0.1)
        pids |= processes()
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) this cluster's live processes have used so far."""
        table = process_table()
        return sum(table[pid][2] for pid in self._live(table, "")) / os.sysconf("SC_CLK_TCK")

    def processes(self, name_part: str) -> list[int]:
        """Ids of this cluster's live processes whose command line (or title) holds ``name_part``."""
        return self._live(process_table(), name_part)

    def _live(self, table: Table, name_part: str) -> list[int]:
        """Ids of this cluster's processes in ``table`` whose command line holds ``name_part`` (zombies have none)."""
        self._remember(table)
        commands = {pid: table[pid][1] for pid in self._pids if pid in table}
        return sorted(pid for pid, command in commands.items() if command and name_part in command)

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every TCP socket this cluster's live processes listen on."""
        inodes: set[str] = set()
        for pid in self.processes(""):
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        if target.startswith("socket:["):
                            inodes.add(target[8:-1])
        return {address for inode, address in _listening_sockets().items() if inode in inodes}


def process_table() -> Table:
    """pid -> (parent pid, command line, CPU ticks used: user + system) of every process this user can see.

    Linux /proc, one read of each process's ``cmdline`` and ``stat``.
    """
    table: Table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            fields = _stat_fields(int(entry.name))
            parent, ticks = int(fields[1]), int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (parent, args, ticks)
    return table


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket in this network namespace (Linux /proc)."""
    found: dict[str, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A":  # LISTEN
                    hex_address, hex_port = fields[1].split(":")
                    # The address in host byte order, 32 bits at a time (little-endian here).
                    raw = b"".join(bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, len(hex_address), 8))
                    found[fields[9]] = (str(ipaddress.ip_address(raw)), int(hex_port, 16))
    return found


def _environment(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _descendants(table: Table, roots: set[int]) -> set[int]:
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, (parent, _, _) in table.items() if parent in frontier and pid not in found}
        found |= frontier
    return found


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first); empty once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped by its parent, is not)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


if __name__ == "__main__":  # a manual check: start, list, stop
    import tempfile

    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))
    try:
        t = time.perf_counter()
        cluster.start()
        print(f"started {cluster.address} in {time.perf_counter() - t:.1f} s; {len(cluster._pids)} processes")
        subprocess.run([RAY, "status", "--address", cluster.address], env=cluster.env, check=False)
    finally:
        cluster.stop()
        print("stopped; left:", cluster.processes(""))
