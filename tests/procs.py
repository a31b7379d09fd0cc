"""Real coord processes on loopback for tests: start, kill -9, restart — by PID, always."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.procutil import free_port_block

ROOT = Path(__file__).resolve().parent.parent


def free_base(n: int) -> int:
    """A base port such that base+1..base+n and base+101..base+100+n are all free."""
    return free_port_block([*range(1, n + 1), *range(101, 101 + n)], lo=20000, hi=60000)


class Cluster:
    def __init__(self, d: Path, n: int = 3, **tuning: int) -> None:
        self.dir = d
        self.n = n
        base = free_base(n)
        self.members = [
            f"{i}=127.0.0.1:{base + i}/127.0.0.1:{base + 100 + i}" for i in range(1, n + 1)
        ]
        self.apis = {i: f"127.0.0.1:{base + 100 + i}" for i in range(1, n + 1)}
        self.peers = {i: ("127.0.0.1", base + i) for i in range(1, n + 1)}
        self.secret = d / "secret"
        self.secret.write_text(secrets.token_hex(32))
        self.tuning = tuning
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def command(self, i: int, members: list[str] | None = None, join: bool = False) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "coord",
            "run",
            "--id",
            str(i),
            "--data-dir",
            str(self.dir / "data"),
        ]
        cmd += ["--secret-file", str(self.secret)]
        for m in members or self.members:
            cmd += ["--member", m]
        for k, v in self.tuning.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        if join:
            cmd.append("--join")
        return cmd

    def start(self, i: int) -> None:
        log = open(self.dir / f"node-{i}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[i] = subprocess.Popen(
            self.command(i), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def start_all(self) -> None:
        for i in range(1, self.n + 1):
            self.start(i)
        self.wait_ready()

    def kill9(self, i: int) -> None:
        p = self.procs.pop(i)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)

    def stop(self, i: int) -> int:
        p = self.procs.pop(i)
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(10)

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.stop(i)

    def get(self, i: int, path: str, timeout: float = 2.0) -> Any:
        with urllib.request.urlopen(f"http://{self.apis[i]}{path}", timeout=timeout) as r:
            return json.loads(r.read())

    def wait_ready(self, timeout: float = 20.0, nodes: list[int] | None = None) -> int:
        """Until every running node (or those of ``nodes``) knows a leader; its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = set()
            try:
                for i in nodes or list(self.procs):
                    leaders.add(self.get(i, "/readyz")["leader"])
                if len(leaders) == 1:
                    (leader,) = leaders
                    if leader in self.procs and self.get(leader, "/v1/cluster")["role"] == "leader":
                        return int(leader)
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        logs = "\n".join((self.dir / f"node-{i}.log").read_text()[-1500:] for i in self.procs)
        raise AssertionError(f"no agreed leader within {timeout}s\n{logs}")

    def endpoints(self) -> list[str]:
        return [self.apis[i] for i in sorted(self.apis)]

    def wal_segments(self, i: int) -> list[Path]:
        return sorted((self.dir / "data" / f"node-{i}" / "wal").glob("wal-*.log"))


@contextlib.contextmanager
def running(d: Path, n: int = 3, **tuning: int) -> Iterator[Cluster]:
    """A started cluster of ``n`` nodes in ``d``, stopped (by PID) on the way out."""
    c = Cluster(d, n, **tuning)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()
