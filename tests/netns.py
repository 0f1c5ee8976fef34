"""Run a command in a network namespace of its own, whose one interface is loopback.

``make test`` runs the suite this way. Every server a test starts (the web
chat, the HTTP API, the Ray test cluster) can then be reached only from
inside the run, and nothing can be fetched from a network. This matters for
Ray: version 2.60 binds its gRPC servers to every interface for any node
address but 127.0.0.1, and the test cluster's nodes need two other loopback
addresses (``tests/ray_cluster.py``). In this namespace, every interface is
loopback.

The namespace is an unprivileged user namespace, with this user's own ids
mapped to themselves, so files keep their owner. Where the kernel refuses
one, the command runs as it is, with one line on stderr saying so.

    python -m tests.netns pytest -q
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
ENV = "QA_TEST_NETNS"  # "1" inside the namespace this module made


def enter() -> str | None:
    """Move this (single-threaded) process into a new user and network namespace with loopback up.

    Returns None, or why the kernel refused.
    """
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return os.strerror(ctypes.get_errno())
    for name, text in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w", encoding="ascii") as f:
            f.write(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # struct ifreq (<net/if.h>): the interface's name in 16 bytes, then a 24-byte union, the flags a short.
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    return None


def refusal() -> str | None:
    """Why :func:`enter` would fail here (tried in a child process), or None.

    A kernel may allow the namespace but not the set-up after it (AppArmor's
    restriction of unprivileged user namespaces does that), and a process
    cannot leave a namespace whose loopback it could not bring up.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: try, and say why not
        os.close(read)
        try:
            reason = enter() or ""
        except OSError as exc:
            reason = exc.strerror or str(exc)
        os.write(write, reason.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        reason = f.read().decode()
    os.waitpid(pid, 0)
    return reason or None


def inside() -> bool:
    """Whether this process runs in a namespace this module made (or under one)."""
    return os.environ.get(ENV) == "1"


def interfaces() -> list[str]:
    """The network interfaces this process sees."""
    return [name for _, name in socket.if_nameindex()]


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m tests.netns COMMAND [ARGS ...]")
    refused = refusal() or enter()
    if refused is None:
        os.environ[ENV] = "1"
    else:
        print(f"tests.netns: no network namespace of its own ({refused}); running on this machine's network",
              file=sys.stderr)  # fmt: skip
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
