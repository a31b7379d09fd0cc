"""Where hosts meet coord, end to end, with the real parts: a 3-node coord cluster, three
target agents each running a real tgtd, a VIP portal, and libiscsi's own initiators.

Everything listens on loopback addresses chosen per run (127.0.X.0/24); every process
is started here and stopped here, by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from target.cli import agent_command
from target.tgt import remove_socket_files

from .iscsi_initiator import Options, Session
from .procs import ROOT, Cluster
from .tgtd_fixture import Perf, skip_reason

IQN = "iqn.2026-12.io.coord:vol1"
TTL_MS = 1500


SKIP = skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Fleet:
    dir: Path
    cluster: Cluster
    subnet: str
    vip: str
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    control_ports: dict[str, int] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://{self.cluster.apis[1]}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        last: Exception | None = None
        for i in sorted(self.cluster.procs):  # any live coord node answers (followers forward)
            req = urllib.request.Request(
                f"http://{self.cluster.apis[i]}{path}", data, method=method
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                raise AssertionError(f"{method} {path}: {e.code} {e.read()!r}") from e
            except OSError as e:
                last = e
        raise AssertionError(f"{method} {path}: no coord node answered: {last}")

    def start_agent(self, k: int) -> None:
        node = f"t{k}"
        port = self.control_ports.setdefault(node, random.randrange(20000, 30000))
        portal = f"{self.subnet}.{20 + k}:3260"
        cluster = self.cluster.endpoints()
        cmd = agent_command(node, cluster, portal, self.dir, control_port=port, ttl_ms=TTL_MS)
        log = open(self.dir / f"{node}.log", "ab")  # noqa: SIM115 - the child owns it
        self.agents[node] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def pids(self, node: str) -> dict[str, int | None]:
        doc: dict[str, int | None] = json.loads((self.dir / f"{node}.pids").read_text())
        return doc

    def kill_node(self, node: str) -> None:
        """The machine dies: its agent and its tgtd, kill -9, no goodbye."""
        pids = self.pids(node)
        for who in ("tgtd", "agent"):
            pid = pids.get(who)
            if pid:
                os.kill(pid, signal.SIGKILL)
        self.agents.pop(node).wait(10)
        self.dead.add(node)

    def stop(self) -> None:
        for _, proc in sorted(self.agents.items()):
            proc.send_signal(signal.SIGTERM)  # a clean stop: VIPs down, targets and tgtd gone
        for node, proc in sorted(self.agents.items()):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            tgtd = self.pids(node).get("tgtd")
            if tgtd and _alive(tgtd):
                os.kill(tgtd, signal.SIGKILL)
        for node in sorted(self.dead):
            tgtd = self.pids(node).get("tgtd")
            if tgtd and _alive(tgtd):
                os.kill(tgtd, signal.SIGKILL)
            remove_socket_files(self.control_ports[node])  # a tgtd killed -9 cannot
        self.agents = {}
        self.cluster.stop_all()

    def wait(self, what: str, cond: Any, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = cond()
            if got:
                return got
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def vip_record(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.call("GET", f"/v1/vips/{self.vip}")
        return doc

    def url(self, host: str | None = None) -> str:
        return f"iscsi://{host or self.vip}:3260/{IQN}/1"

    def sessions(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("GET", "/v1/sessions")["items"]
        return items


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    d = tmp_path_factory.mktemp("fleet")
    rng = random.Random()
    subnet = ""
    for _ in range(50):
        cand = f"127.0.{rng.randrange(100, 250)}"
        if all(_free(f"{cand}.{h}", 3260) for h in (1, 21, 22, 23)):
            subnet = cand
            break
    assert subnet, "no free loopback /24 for the fleet"
    cluster = Cluster(d, 3, pending_session_ttl_s=4)
    f = Fleet(d, cluster, subnet, f"{subnet}.1")
    try:
        cluster.start_all()
        for k in (1, 2, 3):
            f.start_agent(k)
        f.wait(
            "three live target nodes",
            lambda: sum(n["live"] for n in f.call("GET", "/v1/nodes")["items"]) == 3,
            30,
        )
        f.call("PUT", "/v1/policies/p", {"replicas": 2, "arbiter": True})
        f.call("POST", "/v1/volumes", {"name": "vol1", "size_bytes": 1 << 30, "policy": "p"})
        f.call("POST", "/v1/vips", {"address": f.vip})
        f.wait("the VIP's portal", lambda: _listening(f.vip, 3260))
        f.wait(
            "the volume exported on every node",
            lambda: (
                all(_listening(f"{subnet}.{20 + k}", 3260) for k in (1, 2, 3))
                and all(
                    _run(["iscsi-inq", f.url(f"{subnet}.{20 + k}")]).returncode == 0
                    for k in (1, 2, 3)
                )
            ),
            20,
        )
        yield f
    finally:
        f.stop()
    leftovers = [
        n
        for n in ("t1", "t2", "t3")
        if (d / f"{n}.pids").exists() and any(p and _alive(p) for p in f.pids(n).values())
    ]
    assert not leftovers, f"processes left behind by {leftovers}"


def _run(cmd: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_discovery_inquiry_and_capacity_through_the_vip(fleet: Fleet) -> None:
    ls = _run(["iscsi-ls", f"iscsi://{fleet.vip}:3260"])
    assert ls.returncode == 0, ls.stderr
    assert f"Target:{IQN} Portal:{fleet.vip}:3260" in ls.stdout
    inq = _run(["iscsi-inq", fleet.url()])
    assert inq.returncode == 0 and "DIRECT_ACCESS" in inq.stdout, inq.stderr
    cap = _run(["iscsi-readcapacity16", fleet.url()])
    assert cap.returncode == 0, cap.stderr
    assert "LOGICAL BLOCK LENGTH IN BYTES:512" in cap.stdout
    assert "RETURNED LOGICAL BLOCK ADDRESS:2097151" in cap.stdout  # 1 GiB of 512-byte blocks
    bad = _run(["iscsi-inq", f"iscsi://{fleet.vip}:3260/iqn.2026-12.io.coord:nope/1"])
    assert bad.returncode != 0


def test_logins_are_redirected_least_active_first(fleet: Fleet) -> None:
    """Six initiators log in through the VIP and stay: each is sent where the fewest
    sessions are, so they end two per node, and the map says where each one is."""
    nodes = {f"{fleet.subnet}.{20 + k}:3260": f"t{k}" for k in (1, 2, 3)}
    # Earlier logins' pending sessions expire (4 s here): start from an empty count.
    fleet.wait("no sessions left from earlier tests", lambda: not fleet.sessions(), 15)

    async def go() -> dict[str, str]:
        sessions: list[Session] = []
        try:
            for k in range(6):
                name = f"iqn.2026-12.test:spread{k}"
                opts = Options(initiator_name=name)
                sessions.append(await Session.login(f"{fleet.vip}:3260", IQN, options=opts))
            assert all(s.hops[0] == f"{fleet.vip}:3260" and len(s.hops) == 2 for s in sessions)
            went = {s.options.initiator_name: nodes[s.address] for s in sessions}
            # The nodes' reports make them active where they really are.
            fleet.wait(
                "six active sessions in the map",
                lambda: (
                    {
                        x["initiator"]: x["node"]
                        for x in fleet.sessions()
                        if x["initiator"] in went and x["state"] == "active"
                    }
                    == went
                ),
            )
            return went
        finally:
            for s in sessions:
                with contextlib.suppress(Exception):
                    await s.logout()

    went = asyncio.run(go())
    counts = sorted(list(went.values()).count(n) for n in ("t1", "t2", "t3"))
    assert counts == [2, 2, 2], went


def test_data_written_through_one_node_reads_back_through_another(fleet: Fleet) -> None:
    data = os.urandom(8 * 512)

    async def go() -> bytes:
        async with await Session.login(f"{fleet.subnet}.21:3260", IQN) as s:
            await s.write(1000, data)
        async with await Session.login(f"{fleet.subnet}.22:3260", IQN) as s:
            return await s.read(1000, 8)

    assert asyncio.run(go()) == data


def test_io_runs_through_the_vip_and_the_session_is_counted_active(fleet: Fleet) -> None:
    perf = Perf(fleet.url(), "iqn.2026-12.test:perf-short", 4)
    try:
        fleet.wait(
            "the session reported active by its node",
            lambda: any(
                s["initiator"] == "iqn.2026-12.test:perf-short" and s["state"] == "active"
                for s in fleet.sessions()
            ),
        )
    finally:
        perf.finish(15)
    assert perf.lines and max(n for _, n in perf.lines) > 0, perf.text[-5:]


def test_a_grown_volume_shows_its_new_size_through_every_node(fleet: Fleet) -> None:
    fleet.call("PATCH", "/v1/volumes/vol1", {"size_bytes": 2 << 30})

    def grown() -> bool:
        for k in (1, 2, 3):
            cap = _run(["iscsi-readcapacity16", fleet.url(f"{fleet.subnet}.{20 + k}")])
            if "RETURNED LOGICAL BLOCK ADDRESS:4194303" not in cap.stdout:
                return False
        return True

    fleet.wait("2 GiB on every node", grown, 20)


def test_failover_kill9_of_the_node_holding_the_session_and_the_vip(fleet: Fleet) -> None:
    initiator = "iqn.2026-12.test:perf-failover"
    perf = Perf(fleet.url(), initiator, 25)
    try:
        session = fleet.wait(
            "the perf session in the map",
            lambda: next((s for s in fleet.sessions() if s["initiator"] == initiator), None),
        )
        victim = session["node"]
        fleet.call("POST", f"/v1/vips/{fleet.vip}/move", {"to": victim})
        fleet.wait(
            f"the VIP on {victim}",
            lambda: (v := fleet.vip_record()) and v["owner"] == victim and not v["releasing"],
        )
        fleet.wait("the VIP's portal", lambda: _listening(fleet.vip, 3260))
        epoch = fleet.vip_record()["epoch"]
        fleet.wait("I/O before the death", lambda: sum(n > 0 for _, n in perf.lines) >= 2)
        killed_at = time.monotonic()
        fleet.kill_node(victim)
        moved = fleet.wait(
            "the VIP moved to a live node",
            lambda: (
                (v := fleet.vip_record())["owner"] not in (victim, None)
                and not v["releasing"]
                and v
            ),
        )
        vip_moved_s = time.monotonic() - killed_at
        assert moved["epoch"] > epoch
        fleet.wait(
            "the initiator logged in again on a live node",
            lambda: any(
                s["initiator"] == initiator and s["node"] != victim and s["state"] == "active"
                for s in fleet.sessions()
            ),
            20,
        )
        resumed = fleet.wait(
            "I/O again after the death",
            lambda: next((t for t, n in perf.lines if t > killed_at and n > 0), None),
            20,
        )
    finally:
        perf.finish(40)
    before = [n for t, n in perf.lines if t < killed_at]
    assert before and max(before) > 0
    outage = resumed - killed_at
    print(
        f"\nfailover: VIP moved after {vip_moved_s:.2f}s; I/O resumed {outage:.2f}s after kill -9"
    )
    # The outage is recorded, not judged (benchmarks judge time); it must merely end.
    assert outage < 30
