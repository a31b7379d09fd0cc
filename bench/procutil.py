"""Small helpers the benchmarks share: free loopback ports, processes by PID, polling."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port_block(offsets: list[int], lo: int = 21000, hi: int = 59000) -> int:
    """A base such that base+o is free on 127.0.0.1 for every offset o."""
    for _ in range(300):
        base = lo + secrets.randbelow((hi - lo) // 100) * 100
        if all(_free(base + o) for o in offsets):
            return base
    raise RuntimeError("no free ports on 127.0.0.1")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Procs:
    """Child processes by name; every one is stopped by its PID."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[name] = p
        return p

    def kill9(self, name: str) -> None:
        p = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        p.wait(10)

    def stop(self, name: str, timeout: float = 10) -> None:
        p = self.procs.pop(name)
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            p = self.procs[name]
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        for name in list(self.procs):
            self.stop(name)


def etcd_command(
    d: Path, i: int, client_port: int, peer_ports: dict[int, int], extra: tuple[str, ...] = ()
) -> list[str]:
    """etcd member ``e{i}`` of a cluster on 127.0.0.1, its data in ``d/etcd-{i}``."""
    peers = ",".join(f"e{j}=http://127.0.0.1:{port}" for j, port in sorted(peer_ports.items()))
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_ports[i]}"
    return [
        "etcd",
        "--name",
        f"e{i}",
        "--data-dir",
        str(d / f"etcd-{i}"),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        peers,
        "--initial-cluster-state",
        "new",
        "--log-level",
        "error",
        *extra,
    ]


def http_ok(url: str, timeout: float = 1.0, data: bytes | None = None) -> bytes | None:
    try:
        req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body: bytes = r.read()
            return body
    except OSError:
        return None


def wait_until(what: str, check: object, timeout: float = 30.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]
