"""The daemon as operators run it: real processes on loopback, real fsync, kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client, CoordError, PreconditionFailed

from .procs import ROOT, Cluster, free_base


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 3)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    async with Client(cluster.endpoints(), timeout=3.0) as c:
        yield c


def raw(
    cluster: Cluster,
    i: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://{cluster.apis[i]}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metric(cluster: Cluster, i: int, name: str) -> float:
    with urllib.request.urlopen(f"http://{cluster.apis[i]}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def _running(pid: int) -> bool:
    """Alive and not a zombie (a detached child is reaped by init, in its own time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_command_line_cluster_serves_reads_and_writes(tmp_path: Path) -> None:
    """`coord cluster up --detach` / `down`: the README's main job, by the book — three
    coord nodes, three target nodes (agent + tgtd where it can run) and a VIP portal."""
    base = free_base(3)
    d = tmp_path / "c"
    subnet = f"127.0.{secrets.randbelow(100) + 100}"
    vip = f"{subnet}.1"
    cmd = [sys.executable, "-m", "coord", "cluster"]
    where = ["--dir", str(d), "--base-port", str(base), "--vip", vip, "--target-subnet", subnet]
    up = subprocess.run(
        [*cmd, "up", *where, "--detach"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=90,
    )
    pids = json.loads((d / "pids.json").read_text()) if (d / "pids.json").exists() else {}
    tgtds: list[int] = []
    try:
        assert up.returncode == 0, up.stderr
        assert "3-node cluster up" in up.stdout and "<- leader" in up.stdout
        assert "3 target nodes up" in up.stdout and f"VIP {vip}:3260 served" in up.stdout
        assert f"iscsi-inq iscsi://{vip}:3260/iqn.2026-12.io.coord:demo/1" in up.stdout
        tgtds = [
            p
            for n in ("t1", "t2", "t3")
            if (p := json.loads((d / f"{n}.pids").read_text()).get("tgtd"))
        ]
        # One endpoint is enough: a follower forwards to the leader.
        async with Client([f"127.0.0.1:{base + 101}"]) as c:
            rev = await c.put("hello", "world")
            kv = await c.get("hello")
            assert kv is not None and kv["value"] == "world" and kv["mod_revision"] == rev
            info = await c.cluster()
            assert info["leader"] in (1, 2, 3) and len(info["members"]) == 3
            assert (await c.volume("demo")) is not None
        if tgtds and shutil.which("iscsi-inq"):  # what the README says to try
            inq = subprocess.run(
                ["iscsi-inq", f"iscsi://{vip}:3260/iqn.2026-12.io.coord:demo/1"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert inq.returncode == 0 and "DIRECT_ACCESS" in inq.stdout, inq.stderr
    finally:
        down = subprocess.run(
            [*cmd, "down", "--dir", str(d)], capture_output=True, text=True, cwd=ROOT, timeout=30
        )
    assert down.returncode == 0, down.stderr
    assert sorted(pids) == ["1", "2", "3", "t1", "t2", "t3"]
    time.sleep(0.5)
    for pid in [*pids.values(), *tgtds]:  # nothing left behind: nodes, agents, their tgtds
        assert not _running(pid), (pid, pids, tgtds, down.stderr)


def test_cluster_up_in_the_foreground_stops_everything_on_sigterm(tmp_path: Path) -> None:
    # Not only Ctrl-C: `kill PID` on the README's main command must not orphan its nodes.
    d = tmp_path / "fg"
    cmd = [sys.executable, "-m", "coord", "cluster", "up", "--dir", str(d)]
    cmd += ["--base-port", str(free_base(3)), "--targets", "0"]
    up = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        for line in up.stdout:  # bounded: the process prints a few lines, then waits
            if "Ctrl-C stops the cluster" in line:
                break
        pids = json.loads((d / "pids.json").read_text())
        assert len(pids) == 3 and all(_running(p) for p in pids.values())
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
        time.sleep(0.5)
        assert not any(_running(p) for p in pids.values())
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)


async def test_writes_survive_kill9_of_the_leader_and_of_everyone(
    cluster: Cluster, client: Client
) -> None:
    acked = {}
    for i in range(30):
        acked[f"k{i}"] = str(await client.put(f"k{i}", f"v{i}"))
    leader = cluster.wait_ready()
    cluster.kill9(leader)
    new_leader = cluster.wait_ready()
    assert new_leader != leader
    for i in range(30, 40):
        acked[f"k{i}"] = str(await client.put(f"k{i}", f"v{i}"))
    cluster.start(leader)  # the old leader comes back and catches up
    cluster.wait_ready()
    # Now the whole cluster dies at once, and comes back.
    for i in list(cluster.procs):
        cluster.kill9(i)
    cluster.start_all()
    listing = await client.range("k")
    got = {kv["key"]: kv["value"] for kv in listing["items"]}
    assert got == {k: f"v{k[1:]}" for k in acked}


async def test_restart_from_snapshot_and_log(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 3, snapshot_every=40, snapshot_keep=10)
    try:
        c.start_all()
        async with Client(c.endpoints()) as cl:
            for i in range(150):
                await cl.put(f"s{i % 20}", str(i))
            snaps = list((tmp_path / "data").glob("node-*/snap/*.snap"))
            assert snaps, "no snapshot was taken"
            for i in list(c.procs):
                c.stop(i)
            c.start_all()
            listing = await cl.range("s")
            last = {f"s{i % 20}": str(i) for i in range(150)}  # the last write to each key
            assert {kv["key"]: kv["value"] for kv in listing["items"]} == last
    finally:
        c.stop_all()


async def test_torn_tail_is_repaired_and_corrupt_middle_refuses(
    cluster: Cluster, client: Client
) -> None:
    for i in range(10):
        await client.put(f"t{i}", "x" * 50)
    victim = 1 if cluster.wait_ready() != 1 else 2
    cluster.stop(victim)
    seg = cluster.wal_segments(victim)[-1]
    with open(seg, "ab") as f:
        f.write(b"\x00\x00\x01\x00garbage-of-a-torn-write")
    cluster.start(victim)
    cluster.wait_ready()
    await client.put("after", "repair")
    log = (cluster.dir / f"node-{victim}.log").read_text()
    assert "repaired a torn write" in log
    # Now damage the middle of its log: it must refuse to start, naming file and offset.
    cluster.stop(victim)
    seg = cluster.wal_segments(victim)[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 3] ^= 0xFF
    seg.write_bytes(bytes(data))
    run = subprocess.run(
        cluster.command(victim), capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert run.returncode == 3, run.stderr
    assert "refusing to start" in run.stderr and str(seg) in run.stderr and "offset" in run.stderr
    # The other two keep serving.
    assert await client.put("still", "serving")


async def test_watch_delivers_every_event_once_in_order_across_a_leader_change(
    cluster: Cluster, client: Client
) -> None:
    start = await client.put("w/start", "0")
    seen: list[dict[str, Any]] = []
    leader = cluster.wait_ready()
    # The watch is served by the leader, the node that will be killed under it.
    order = [cluster.apis[leader], *(a for i, a in sorted(cluster.apis.items()) if i != leader)]

    async def consume(watcher: Client) -> None:
        async for ev in watcher.watch("w/", start_revision=start, progress_ms=300):
            if ev.get("type") in ("put", "delete"):
                seen.append(ev)
                if ev["key"] == "w/stop":
                    return

    async with Client(cluster.endpoints()) as writer, Client(order) as watcher:
        task = asyncio.get_running_loop().create_task(consume(watcher))
        revs = [start]
        for i in range(20):
            revs.append(await writer.put(f"w/{i}", str(i)))
            if i == 8:
                assert watcher.endpoints[watcher._current].endswith(cluster.apis[leader])
                cluster.kill9(leader)
        revs.append(await writer.put("w/stop", "!"))
        await asyncio.wait_for(task, 30)
    got = [ev["revision"] for ev in seen]
    assert got == revs, f"watch saw {got}, writes were {revs}"


async def test_a_watch_from_compacted_history_gets_410_and_the_client_relists(
    cluster: Cluster, client: Client
) -> None:
    leader = cluster.wait_ready()
    revs = [await client.put(f"c/{i}", str(i)) for i in range(5)]
    assert (await client.compact(revs[2]))["compact_revision"] == revs[2]
    status, body = raw(cluster, leader, "GET", f"/v1/watch?prefix=c/&start_revision={revs[0]}")
    assert status == 410 and body["error"]["code"] == "compacted"
    assert body["error"]["compact_revision"] == revs[2]
    # Watches are served where they land: the leader has applied the compaction (a
    # follower may not have yet, and would stream the old events instead).
    first = [cluster.apis[leader], *(a for i, a in sorted(cluster.apis.items()) if i != leader)]
    async with Client(first, timeout=3.0) as watcher:

        async def drain() -> None:
            async for _ in watcher.watch("c/", revs[0], relist=False):
                pass

        with pytest.raises(CoordError, match="compacted"):
            await asyncio.wait_for(drain(), 10)
        # With relist (the default) the client lists what is there, then follows.
        seen: list[dict[str, Any]] = []

        async def follow() -> None:
            async for ev in watcher.watch("c/", revs[0], progress_ms=300):
                seen.append(ev)
                if ev.get("key") == "c/after":
                    return

        task = asyncio.get_running_loop().create_task(follow())
        await asyncio.sleep(0.3)
        after = await client.put("c/after", "x")
        await asyncio.wait_for(task, 10)
    relist = seen[0]
    assert relist["type"] == "relist" and relist["revision"] >= revs[-1]
    assert sorted(kv["key"] for kv in relist["items"]) == [f"c/{i}" for i in range(5)]
    assert [ev["revision"] for ev in seen if ev.get("type") == "put"] == [after]
    status, _ = raw(cluster, leader, "POST", "/v1/compact", b'{"revision": "x"}')
    assert status == 400


async def test_lease_expiry_deletes_keys_and_keepalive_keeps_them(client: Client) -> None:
    short = await client.grant(1)
    await client.put("eph/short", "x", lease=short)
    async with client.lease(ttl=1) as kept:
        await client.put("eph/kept", "y", lease=kept)
        await asyncio.sleep(2.5)
        assert await client.get("eph/short") is None
        assert await client.get("eph/kept") is not None
    assert await client.get("eph/kept") is None  # revoked on exit


async def test_compare_and_set(client: Client) -> None:
    rev = await client.put("cas", "1")
    with pytest.raises(PreconditionFailed) as err:
        await client.put("cas", "2", prev_revision=rev + 100)
    assert err.value.details["mod_revision"] == rev
    assert await client.put("cas", "2", prev_revision=rev) > rev


async def test_exactly_once_retry_returns_the_original_result(cluster: Cluster) -> None:
    leader = cluster.wait_ready()
    hdr = {
        "X-Coord-Client": "retrying-client",
        "X-Coord-Seq": "1",
        "Content-Type": "application/json",
    }
    s1, first = raw(cluster, leader, "PUT", "/v1/kv/once", b'{"value": "a"}', hdr)
    s2, again = raw(cluster, leader, "PUT", "/v1/kv/once", b'{"value": "a"}', hdr)
    assert s1 == s2 == 200 and again == {**first, "retried": True}
    _, kv = raw(cluster, leader, "GET", "/v1/kv/once")
    assert kv["version"] == 1  # applied once
    s3, _ = raw(
        cluster, leader, "PUT", "/v1/kv/once", b'{"value": "b"}', {**hdr, "X-Coord-Seq": "2"}
    )
    s4, stale = raw(cluster, leader, "PUT", "/v1/kv/once", b'{"value": "c"}', hdr)
    assert s3 == 200 and s4 == 409 and stale["error"]["code"] == "stale"


async def test_garbage_on_the_peer_port_leaves_the_node_serving(
    cluster: Cluster, client: Client
) -> None:
    for i in cluster.procs:
        host, port = cluster.peers[i]
        for payload in (
            os.urandom(4096),
            b"\xff\xff\xff\xff" + b"\0" * 64,
            b"GET / HTTP/1.1\r\n\r\n",
            (100).to_bytes(4, "big") + b"\0" * 32 + b"x" * 100,  # well framed, bad MAC
        ):
            with socket.create_connection((host, port), timeout=2) as s:
                s.recv(16)  # the nonce
                s.sendall(payload)
                s.settimeout(10)  # an incomplete first frame is given up on after 5 s
                with contextlib.suppress(ConnectionResetError):
                    assert s.recv(1) == b""  # closed on us
    assert await client.put("after-garbage", "ok")
    for i in cluster.procs:
        assert cluster.get(i, "/healthz")["ok"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("PUT", "/v1/kv/a", b"{not json", 400, "bad_request"),
        ("PUT", "/v1/kv/a", b'["a list"]', 400, "bad_request"),
        ("PUT", "/v1/kv/a", b'{"value": 5}', 400, "bad_request"),
        ("PUT", "/v1/kv/a", b'{"value": "x", "lease": "one"}', 400, "bad_request"),
        ("PUT", "/v1/kv/" + "k" * 5000, b'{"value": "x"}', 400, "bad_request"),
        ("PUT", "/v1/kv/a", b'{"value": "' + b"v" * (1 << 20 + 1) + b'"}', 413, "too_large"),
        ("POST", "/v1/txn", b'{"compare": [{"key": "a", "target": "nope"}]}', 400, "bad_request"),
        ("POST", "/v1/txn", b'{"success": [{"op": "drop_table"}]}', 400, "bad_request"),
        ("POST", "/v1/leases", b'{"ttl": 0}', 400, "bad_request"),
        ("GET", "/v1/kv/a?consistency=whatever", None, 400, "bad_request"),
        ("GET", "/v1/nowhere", None, 404, "not_found"),
    ],
)
def test_bad_input_gets_4xx_and_the_node_keeps_serving(
    cluster: Cluster, method: str, path: str, body: bytes | None, status: int, code: str
) -> None:
    leader = cluster.wait_ready()
    got_status, doc = raw(cluster, leader, method, path, body, {"Content-Type": "application/json"})
    assert (got_status, doc["error"]["code"]) == (status, code)
    assert raw(cluster, leader, "GET", "/healthz")[0] == 200


def test_openapi_lists_every_route(cluster: Cluster) -> None:
    leader = cluster.wait_ready()
    doc = cluster.get(leader, "/v1/openapi.json")
    for path in ("/v1/kv/{key}", "/v1/txn", "/v1/watch", "/v1/leases", "/v1/cluster", "/metrics"):
        assert path in doc["paths"]
    with urllib.request.urlopen(f"http://{cluster.apis[leader]}/metrics", timeout=2) as r:
        text = r.read().decode()
    assert "coord_term" in text and 'coord_proposals_total{outcome="committed"}' in text
    assert "coord_fsync_seconds_bucket" in text
    count = metric(cluster, leader, "coord_fsync_seconds_count")
    assert count > 0 and metric(cluster, leader, 'coord_fsync_seconds_bucket{le="+Inf"}') == count
    members = cluster.get(leader, "/v1/cluster")["members"]
    assert all(m["address"] == m["peer"] for m in members)


async def test_membership_add_learner_promote_and_remove(cluster: Cluster, client: Client) -> None:
    for i in range(20):
        await client.put(f"m{i}", str(i))
    # A fourth machine: empty disk, started with --join, knowing the cluster it joins.
    base_peer, base_api = cluster.peers[1][1] - 1, int(cluster.apis[1].split(":")[1]) - 1
    spec = f"4=127.0.0.1:{base_peer + 4}/127.0.0.1:{base_api + 4}"
    cluster.apis[4] = f"127.0.0.1:{base_api + 4}"
    cluster.peers[4] = ("127.0.0.1", base_peer + 4)
    log = open(cluster.dir / "node-4.log", "ab")  # noqa: SIM115 - the child owns it
    cluster.procs[4] = subprocess.Popen(
        cluster.command(4, [*cluster.members, spec], join=True),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    leader = cluster.wait_ready(nodes=[1, 2, 3])
    body = json.dumps(
        {"id": 4, "peer": f"127.0.0.1:{base_peer + 4}", "api": f"127.0.0.1:{base_api + 4}"}
    )
    status, doc = raw(cluster, leader, "POST", "/v1/cluster/members", body.encode())
    assert status == 200 and doc["learner"] is True, doc
    # Asking again cannot help: a final refusal, not "unavailable, retry".
    status, doc = raw(cluster, leader, "POST", "/v1/cluster/members", body.encode())
    assert status == 409 and doc["error"]["code"] == "invalid_change", doc
    assert "already a member" in doc["error"]["message"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, doc = raw(cluster, leader, "POST", "/v1/cluster/members/4/promote")
        if status == 200:
            break
        assert doc["error"]["code"] == "unavailable"  # not caught up yet: refused, retry
        await asyncio.sleep(0.2)
    assert status == 200, doc
    info = await client.cluster()
    assert {m["id"]: m["voter"] for m in info["members"]} == {1: True, 2: True, 3: True, 4: True}
    # The new voter holds everything, served from its own state.
    status, kv = raw(cluster, 4, "GET", "/v1/kv/m19?consistency=serializable")
    assert status == 200 and kv["value"] == "19"
    # Remove a follower; the cluster goes on with the other three.
    victim = next(i for i in (1, 2, 3) if i != leader)
    status, doc = raw(cluster, leader, "DELETE", f"/v1/cluster/members/{victim}")
    assert status == 200, doc
    status, doc = raw(cluster, leader, "DELETE", f"/v1/cluster/members/{victim}")
    assert status == 409 and "not a member" in doc["error"]["message"], doc
    cluster.stop(victim)
    assert await client.put("after-removal", "ok")
    voters = sorted(m["id"] for m in (await client.cluster())["members"] if m["voter"])
    assert victim not in voters and len(voters) == 3


async def test_locks_fence_and_elections_follow_leases(client: Client) -> None:
    a = await client.grant(5)
    b = await client.grant(5)
    first = await client.lock("db", a)
    waiting = asyncio.get_running_loop().create_task(client.lock("db", b, timeout=10))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # b queues behind a
    await client.revoke(a)  # a's holder dies: its lease goes, and the lock with it
    second = await asyncio.wait_for(waiting, 10)
    assert second["revision"] > first["revision"]  # the fencing token only grows
    # A waiter that gives up leaves the queue: it never comes to hold the lock unseen.
    c = await client.grant(30)
    with pytest.raises(CoordError) as gave_up:
        await client.lock("db", c, timeout=0.5)
    assert gave_up.value.status == 408
    await client.unlock("db", second["key"])
    d = await client.grant(30)
    third = await asyncio.wait_for(client.lock("db", d, timeout=5), 10)
    assert third["key"].endswith(f"{d:016x}")  # not blocked behind c's abandoned key
    # A retry waits on the same key as the attempt it retries (same lease): the first
    # attempt giving up must not take the key away from the retry.
    e = await client.grant(30)
    loop = asyncio.get_running_loop()
    first_try = loop.create_task(client.lock("db", e, timeout=1))
    await asyncio.sleep(0.3)
    retry = loop.create_task(client.lock("db", e, timeout=10))
    with pytest.raises(CoordError):
        await first_try
    await asyncio.sleep(0.5)  # a leave, had it been sent, would have committed by now
    await client.unlock("db", third["key"])
    fourth = await asyncio.wait_for(retry, 10)
    assert fourth["key"].endswith(f"{e:016x}") and fourth["revision"] > third["revision"]
    e1 = await client.grant(5)
    won = await client.campaign("scheduler", e1, "node-a")
    seen = await client.leader_of("scheduler")
    assert seen is not None and seen["value"] == "node-a" and seen["key"] == won["key"]
    await client.resign("scheduler", won["key"])
    assert await client.leader_of("scheduler") is None


async def test_pipelined_channel_many_in_flight(cluster: Cluster, client: Client) -> None:
    async with client.channel() as ch:
        # Asked in one turn of the loop, large values still go: more than the server
        # takes in one frame (2 MiB), so the client splits them.
        big = await asyncio.gather(*(ch.put(f"big/{i}", "x" * 800_000) for i in range(3)))
        assert len(set(big)) == 3
        revs = await asyncio.gather(*(ch.put(f"p/{i}", str(i)) for i in range(500)))
        assert len(set(revs)) == 500  # each write its own revision
        got = await asyncio.gather(*(ch.get(f"p/{i}") for i in range(0, 500, 50)))
        assert [g["value"] for g in got if g] == [str(i) for i in range(0, 500, 50)]
        with pytest.raises(PreconditionFailed):
            await ch.put("p/0", "x", prev_revision=10**9)
        assert await ch.get("p/none") is None
    listing = await client.range("p/")
    assert len(listing["items"]) == 500


def test_channel_rejects_garbage_frames_and_keeps_serving(cluster: Cluster) -> None:
    import msgpack
    from aiohttp import ClientSession, WSMsgType

    leader = cluster.wait_ready()

    async def go() -> list[dict[str, Any]]:
        async with (
            ClientSession() as s,
            s.ws_connect(f"http://{cluster.apis[leader]}/v1/channel") as ws,
        ):
            answers = []
            for frame in (
                b"\xc1garbage",
                msgpack.packb([1, 2]),
                msgpack.packb({"id": "x"}),
                msgpack.packb({"id": 7, "op": "nope"}),
                msgpack.packb({"id": 8, "op": "put", "key": "g", "value": 3}),
            ):
                await ws.send_bytes(frame)
                msg = await ws.receive(timeout=5)
                assert msg.type == WSMsgType.BINARY
                answers.extend(msgpack.unpackb(msg.data))
            await ws.send_bytes(msgpack.packb({"id": 9, "op": "put", "key": "g", "value": "ok"}))
            answers.extend(msgpack.unpackb((await ws.receive(timeout=5)).data))
            return answers

    answers = asyncio.run(go())
    # [1, 2] is a frame of two requests, neither a map: two answers
    assert [a["status"] for a in answers] == [400, 400, 400, 400, 400, 400, 200]
    assert answers[4]["body"]["error"]["code"] == "bad_request" and answers[4]["id"] == 7


def test_channel_frame_of_many_requests(cluster: Cluster) -> None:
    import msgpack
    from aiohttp import ClientSession

    leader = cluster.wait_ready()
    before = metric(cluster, leader, "coord_batched_writes_total")

    async def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with (
            ClientSession() as s,
            s.ws_connect(f"http://{cluster.apis[leader]}/v1/channel") as ws,
        ):
            frame = [{"id": i, "op": "put", "key": f"f/{i}", "value": str(i)} for i in range(300)]
            frame += [{"id": 300, "op": "put", "key": "f/bad", "value": 5}, "not a map"]
            await ws.send_bytes(msgpack.packb(frame))
            answers: list[dict[str, Any]] = []
            while len(answers) < len(frame):
                answers.extend(msgpack.unpackb((await ws.receive(timeout=10)).data))
            await ws.send_bytes(msgpack.packb([{"id": 0, "op": "get"}] * 4097))
            too_many = msgpack.unpackb((await ws.receive(timeout=10)).data)
            return answers, too_many

    answers, too_many = asyncio.run(go())
    by_id = {a["id"]: a for a in answers if a["id"] is not None}
    assert all(by_id[i]["status"] == 200 for i in range(300))
    assert len({by_id[i]["body"]["revision"] for i in range(300)}) == 300  # each its own
    assert by_id[300]["status"] == 400
    assert [a["status"] for a in answers if a["id"] is None] == [400]
    assert [a["status"] for a in too_many] == [400]
    # writes that arrive together share log entries (and each still gets its result)
    assert metric(cluster, leader, "coord_batched_writes_total") > before
    _, kv = raw(cluster, leader, "GET", "/v1/kv/f/299")
    assert kv["value"] == "299" and kv["version"] == 1
