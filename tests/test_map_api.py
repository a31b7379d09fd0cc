"""The cluster map's API against a real 3-node cluster on loopback.

One cluster serves the whole module (started once: the suite stays fast). So
that tests do not see each other's nodes, each starts from a map where every
node is drained and every VIP deleted (the ``client`` fixture's clean-up), and
registers fresh nodes of its own with unique names and portals. VIP addresses
are plain strings: nothing binds them here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coord.client import (
    Client,
    Conflict,
    CoordError,
    MapCache,
    NotFound,
    PreconditionFailed,
)
from coord.clustermap.model import GIB
from coord.server import mapapi, openapi

from .procs import Cluster

PENDING_TTL_S = 2  # the cluster's pending_session_ttl_s: short, so a test can see expiry
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("map"), 3, pending_session_ttl_s=PENDING_TTL_S)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    async with Client(cluster.endpoints(), timeout=3.0) as c:
        yield c
        # Leave nothing eligible behind: drain every node, delete every VIP.
        for n in (await c.nodes())["items"]:
            if not n["drained"]:
                await c.drain(n["id"])
        for v in (await c.vips())["items"]:
            if not v.get("deleting"):
                await c.delete_vip(v["address"])


def uid(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


async def fresh_nodes(
    c: Client, n: int, *, ttl_ms: int = 60_000, disk_gib: int = 10
) -> list[tuple[str, int]]:
    """Register ``n`` new nodes (unique names and portals): [(name, lease)]."""
    out = []
    for _ in range(n):
        k = next(_ids)
        disks = [{"id": "d1", "size_bytes": disk_gib * GIB}]
        got = await c.register_node(f"node{k}", f"127.0.1.1:{10000 + k}", disks, ttl_ms)
        out.append((got["node"], got["lease"]))
    return out


def vip_address() -> str:
    k = next(_ids)
    return f"127.0.{10 + k // 250}.{k % 250 + 1}"


def raw(
    cluster: Cluster,
    i: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://{cluster.apis[i]}{path}",
        data=body,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something true; that value. Fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


# ---- happy paths ---------------------------------------------------------------------------


async def test_nodes_policies_volumes_and_the_summary(cluster: Cluster, client: Client) -> None:
    nodes = await fresh_nodes(client, 3)
    names = [n for n, _ in nodes]
    listed = {n["id"]: n for n in (await client.nodes())["items"]}
    assert set(names) <= set(listed)
    one = await client.node(names[0])
    assert one is not None and one["live"] and one["lease"] == nodes[0][1]
    assert one["disks"] == [
        {"id": "d1", "size_bytes": 10 * GIB, "tier": "standard", "used_bytes": 0}
    ]
    assert await client.node("no-such-node") is None

    pol = uid("mirror")
    made = await client.put_policy(pol, replicas=2, arbiter=True)
    assert made["created"] is True and made["revision"] > 0
    got = await client.policy(pol)
    assert got is not None and got["replicas"] == 2 and got["arbiter"] is True
    assert got["placement"] == "scatter" and got["mod_revision"] == made["revision"]
    with pytest.raises(PreconditionFailed):
        await client.put_policy(
            pol, replicas=2, arbiter=True, prev_revision=got["mod_revision"] + 99
        )
    again = await client.put_policy(
        pol, replicas=2, arbiter=True, prev_revision=got["mod_revision"]
    )
    assert again["created"] is False
    assert pol in {p["name"] for p in (await client.policies())["items"]}

    vol = uid("vol")
    created = await client.create_volume(vol, GIB, pol)
    reps = created["replicas"]
    assert [r["role"] for r in reps] == ["data", "data", "arbiter"]
    assert len({r["node"] for r in reps}) == 3 and {r["node"] for r in reps} <= set(names)
    assert created["iqn"] == f"iqn.2026-12.io.coord:{vol}"
    v = await client.volume(vol)
    assert v is not None and v["state"] == "ok" and v["io_replicas"] == [1, 2, 3]
    assert vol in {x["name"] for x in (await client.volumes(state="ok"))["items"]}
    assert vol not in {x["name"] for x in (await client.volumes(state="degraded"))["items"]}

    grown = await client.resize_volume(vol, 2 * GIB)
    assert grown["size_bytes"] == 2 * GIB
    v = await client.volume(vol)
    assert v is not None and [r["size_bytes"] for r in v["replicas"]] == [2 * GIB, 2 * GIB, 2 << 20]
    with pytest.raises(CoordError) as err:
        await client.resize_volume(vol, GIB)  # volumes only grow
    assert err.value.status == 400 and "only grow" in err.value.message

    summary = await client.map_summary()
    assert summary["volumes"] >= 1 and summary["policies"] >= 1 and summary["revision"] > 0
    assert summary["live_nodes"] >= 3

    # Any node answers serializable reads from its own copy (eventually current).
    for i in cluster.procs:

        async def seen(i: int = i) -> bool:
            status, doc = raw(cluster, i, "GET", f"/v1/volumes/{vol}?consistency=serializable")
            return status == 200 and doc["size_bytes"] == 2 * GIB

        await until(f"node {i} serves the resized volume", seen)

    assert (await client.delete_volume(vol))["deleted"] is True
    assert await client.volume(vol) is None
    assert (await client.delete_policy(pol))["deleted"] is True
    assert await client.policy(pol) is None


async def test_replicas_accused_healed_and_rebuilt(client: Client) -> None:
    names = [n for n, _ in await fresh_nodes(client, 3)]
    pol = uid("fragile")
    await client.put_policy(pol, replicas=2, max_heal_failures=1)
    vol = uid("vol")
    reps = (await client.create_volume(vol, GIB, pol))["replicas"]
    spare = next(n for n in names if n not in {r["node"] for r in reps})

    accused = await client.accuse(vol, 1, "initiator-a")
    assert accused["state"] == "accused" and accused["volume_state"] == "unwritable"
    v = await client.volume(vol)
    assert v is not None and v["io_replicas"] == [2]
    assert (await client.heal(vol, 1, "started"))["state"] == "healing"
    assert (await client.heal(vol, 1, "ok"))["state"] == "healthy"
    v = await client.volume(vol)
    assert v is not None and v["state"] == "ok"
    with pytest.raises(PreconditionFailed):
        await client.heal(vol, 1, "ok")  # healthy: nothing to heal
    with pytest.raises(NotFound):
        await client.accuse(vol, 9, "initiator-a")

    # One failed heal is enough under this policy: the leader schedules a rebuild
    # on the node that holds none of the volume's replicas.
    await client.accuse(vol, 1, "initiator-a")
    failed = await client.heal(vol, 1, "failed")
    assert failed["heal_failures"] == 1 and failed["rebuild"] == "waiting"

    async def rebuilding() -> dict[str, Any] | None:
        v = await client.volume(vol)
        assert v is not None
        return next((r for r in v["replicas"] if r["state"] == "rebuilding"), None)

    new = await until("the rebuild is scheduled", rebuilding)
    assert new["replaces"] == 1 and new["node"] == spare and new["id"] == 3
    with pytest.raises(PreconditionFailed):
        await client.rebuilt(vol, 2, True)  # replica 2 is not being rebuilt
    done = await client.rebuilt(vol, 3, True)
    assert done["replaced"] == 1
    v = await client.volume(vol)
    assert v is not None
    assert {r["id"]: r["state"] for r in v["replicas"]} == {
        1: "retired",
        2: "healthy",
        3: "healthy",
    }
    assert v["state"] == "ok"
    await client.delete_volume(vol)
    await client.delete_policy(pol)


# ---- errors --------------------------------------------------------------------------------


async def test_bad_requests_get_precise_4xx_and_the_node_keeps_serving(
    cluster: Cluster, client: Client
) -> None:
    names = [n for n, _ in await fresh_nodes(client, 2)]
    pol, wide, vol = uid("pair"), uid("wide"), uid("vol")
    await client.put_policy(pol, replicas=2)
    await client.put_policy(wide, replicas=3)
    await client.create_volume(vol, GIB, pol)
    leader = cluster.wait_ready()

    def call(method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        status, doc = raw(cluster, leader, method, path, data)
        return status, doc["error"]

    status, err = call(
        "POST", "/v1/volumes", {"name": uid("v"), "size_bytes": GIB, "policy": "nope"}
    )
    assert (status, err["code"]) == (404, "not_found") and "nope" in err["message"]
    status, err = call("POST", "/v1/volumes", {"name": vol, "size_bytes": GIB, "policy": pol})
    assert (status, err["code"]) == (409, "exists")
    # Three replicas on different nodes, with two nodes eligible: says what is missing.
    status, err = call("POST", "/v1/volumes", {"name": uid("v"), "size_bytes": GIB, "policy": wide})
    assert (status, err["code"]) == (409, "unplaceable")
    assert "needs 3" in err["message"] and all(n in err["message"] for n in names), err
    status, err = call("DELETE", f"/v1/policies/{pol}")
    assert (status, err["code"]) == (409, "in_use") and vol in err["message"]
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/v1/vips", {"address": "300.1.1.1"}, "not an IP address"),
        ("POST", "/v1/vips", {"address": "127.0.10.1", "port": 70000}, "'port'"),
        ("GET", "/v1/vips/not-an-ip", None, "not an IP address"),
        ("POST", "/v1/volumes", b"{not json", "malformed JSON"),
        ("POST", "/v1/volumes", b"[1, 2]", "JSON object"),
        ("POST", "/v1/volumes", {"name": "x", "size_bytes": 5, "policy": pol}, "'size_bytes'"),
        ("POST", "/v1/volumes", {"name": "a/b", "size_bytes": GIB, "policy": pol}, "'name'"),
        (
            "POST",
            "/v1/volumes",
            {"name": "x", "size_bytes": GIB, "policy": pol, "iqn": "no"},
            "iSCSI",
        ),
        ("POST", "/v1/volumes", {"name": "x", "size_bytes": GIB, "polcy": pol}, "'polcy'"),
        ("PUT", f"/v1/policies/{uid('p')}", {"replicas": 9}, "'replicas'"),
        ("PUT", f"/v1/policies/{uid('p')}", {"replicas": 1, "placement": "x"}, "'placement'"),
        ("PUT", "/v1/nodes/n1", {"portal": "nowhere", "ttl_ms": 1000}, "'portal'"),
        ("PUT", "/v1/nodes/n1", {"portal": "127.0.0.1:1", "ttl_ms": 5}, "'ttl_ms'"),
        ("PUT", "/v1/nodes/-bad", {"portal": "127.0.0.1:1", "ttl_ms": 1000}, "node 'node'"),
        ("POST", "/v1/nodes/n1/heartbeat", {"lease": "one"}, "'lease'"),
        ("PUT", "/v1/nodes/n1/sessions", {"lease": 1, "sessions": [["v"]]}, "pair"),
        ("POST", "/v1/sessions", {"volume": vol, "initiator": "has space"}, "'initiator'"),
        ("GET", "/v1/volumes?state=sideways", None, "?state="),
        ("DELETE", f"/v1/volumes/{vol}?force=maybe", None, "?force="),
        ("POST", f"/v1/volumes/{vol}/replicas/x/accuse", {"by": "me"}, "replica ids"),
        ("POST", f"/v1/volumes/{vol}/replicas/1/heal", {"result": "maybe"}, "'result'"),
        ("POST", f"/v1/volumes/{vol}/replicas/1/rebuilt", {"ok": "yes"}, "'ok'"),
        ("GET", "/v1/nodes?consistency=sometimes", None, "consistency"),
    ]
    for method, path, body, words in cases:
        status, err = call(method, path, body)
        assert (status, err["code"]) == (400, "bad_request"), (method, path, err)
        assert words in err["message"], (method, path, err["message"])
    # Integers the log cannot hold (it is msgpack: 64 bits) are refused, not a 500.
    huge = {"X-Coord-Client": "c", "X-Coord-Seq": "9" * 30}
    status, doc = raw(cluster, leader, "POST", "/v1/vips", b'{"address": "127.0.99.2"}', huge)
    assert (status, doc["error"]["code"]) == (400, "bad_request")
    compare = {"compare": [{"key": "k", "target": "version", "value": 10**30}]}
    status, err = call("POST", "/v1/txn", compare)
    assert (status, err["code"]) == (400, "bad_request") and "64-bit" in err["message"]
    status, err = call("POST", f"/v1/nodes/{names[0]}/heartbeat", {"lease": 10**12})
    assert (status, err["code"]) == (409, "stale_lease")
    status, err = call("POST", "/v1/vips/127.0.99.1/move", {})
    assert (status, err["code"]) == (404, "not_found")
    # Still serving, reads and writes.
    assert raw(cluster, leader, "GET", "/healthz")[0] == 200
    assert (await client.resize_volume(vol, 2 * GIB))["size_bytes"] == 2 * GIB
    await client.delete_volume(vol)
    for p in (pol, wide):
        await client.delete_policy(p)


async def test_a_write_refused_by_the_store_does_not_shadow_the_next_one(client: Client) -> None:
    """The refusal used the sequence number in the store; the next write needs its own."""
    async with Client(client.endpoints) as fresh:
        with pytest.raises(CoordError):
            await fresh.create_vip("not-an-address")  # refused at the boundary, first write
        with pytest.raises(NotFound):
            await fresh.create_volume(uid("v"), GIB, uid("no-policy"))  # refused in the log
        pol = uid("p")
        made = await fresh.put_policy(pol, replicas=1)
        assert made["created"] is True and "retried" not in made
        assert await fresh.policy(pol) is not None
        await fresh.delete_policy(pol)


# ---- sessions ------------------------------------------------------------------------------


async def test_least_active_assignment_spreads_logins(client: Client) -> None:
    nodes = await fresh_nodes(client, 3)
    names = [n for n, _ in nodes]
    pol, vol = uid("p"), uid("vol")
    await client.put_policy(pol, replicas=1)
    await client.create_volume(vol, GIB, pol)
    initiators = [f"iqn.2026-01.org.example:host{i}" for i in range(6)]
    got = [await client.assign_session(vol, i) for i in initiators]
    assert Counter(g["node"] for g in got) == {n: 2 for n in names}
    assert all(g["state"] == "pending" for g in got)
    portals = {n["id"]: n["portal"] for n in (await client.nodes())["items"]}
    assert all(g["portal"] == portals[g["node"]] for g in got)
    # Logging in again is answered with the same node.
    assert (await client.assign_session(vol, initiators[0]))["node"] == got[0]["node"]

    # The agent of one node reports what its target has: those become active.
    first, lease = nodes[0]
    mine = [g["initiator"] for g in got if g["node"] == first]
    report = await client.report_sessions(first, lease, [(vol, i) for i in mine])
    assert report["active"] == 2
    listed = (await client.sessions(node=first))["items"]
    assert {(s["initiator"], s["state"]) for s in listed} == {(i, "active") for i in mine}
    report = await client.report_sessions(first, lease, [(vol, mine[0])])
    assert report["ended"] == 1  # the other logged out
    with pytest.raises(Conflict) as err:
        await client.delete_volume(vol)  # an initiator is logged in
    assert err.value.code == "in_use" and mine[0] in err.value.message
    with pytest.raises(Conflict) as err:
        await client.report_sessions(first, lease + 10**9, [])
    assert err.value.code == "stale_lease"

    # A drained node takes no new logins.
    await client.drain(names[2])
    later = [await client.assign_session(vol, f"iqn.2026-01.org.example:late{i}") for i in range(4)]
    assert names[2] not in {g["node"] for g in later}
    assert len((await client.sessions(volume=vol))["items"]) >= 9

    await client.delete_session(vol, mine[0])
    with pytest.raises(NotFound):
        await client.delete_session(vol, mine[0])
    await client.delete_volume(vol, force=True)
    await client.delete_policy(pol)


async def test_a_pending_session_expires_and_an_active_one_stays(client: Client) -> None:
    ((node, lease),) = await fresh_nodes(client, 1)
    pol, vol = uid("p"), uid("vol")
    await client.put_policy(pol, replicas=1)
    await client.create_volume(vol, GIB, pol)
    never = "iqn.2026-01.org.example:never-logs-in"
    there = "iqn.2026-01.org.example:logged-in"
    await client.assign_session(vol, never)
    await client.assign_session(vol, there)
    await client.report_sessions(node, lease, [(vol, there)])

    async def expired() -> bool:
        left = {s["initiator"] for s in (await client.sessions(volume=vol))["items"]}
        assert there in left
        return never not in left

    await until(f"the pending session expires (TTL {PENDING_TTL_S}s)", expired)
    await client.delete_volume(vol, force=True)
    await client.delete_policy(pol)


async def test_the_channel_serves_the_hot_path(client: Client) -> None:
    ((node, lease),) = await fresh_nodes(client, 1)
    pol, vol = uid("p"), uid("vol")
    await client.put_policy(pol, replicas=1)
    await client.create_volume(vol, GIB, pol)
    addr = vip_address()
    await client.create_vip(addr)
    async with client.channel() as ch:
        beat = await ch.heartbeat(node, lease)
        assert [v["address"] for v in beat["vips"]] == [addr]
        logins = await asyncio.gather(
            *(ch.assign_session(vol, f"iqn.2026-01.org.example:ch{i}") for i in range(20))
        )
        assert {g["node"] for g in logins} == {node}
        report = await ch.report_sessions(node, lease, [(vol, g["initiator"]) for g in logins])
        assert report["active"] == 20
        with pytest.raises(CoordError) as err:
            await ch.assign_session(vol, "bad name")
        assert err.value.status == 400
        with pytest.raises(NotFound):
            await ch.assign_session(uid("missing"), "iqn.2026-01.org.example:x")
        with pytest.raises(Conflict):
            await ch.heartbeat(node, lease + 10**9)
    await client.delete_volume(vol, force=True)
    await client.delete_policy(pol)


# ---- VIPs ----------------------------------------------------------------------------------


async def test_heartbeats_return_the_vips_a_node_may_serve(client: Client) -> None:
    ((node, lease),) = await fresh_nodes(client, 1)
    a, b = vip_address(), vip_address()
    ca = await client.create_vip(a)
    cb = await client.create_vip(b, port=3261)
    assert ca["owner"] == cb["owner"] == node
    beat = await client.heartbeat(node, lease)
    assert beat["vips"] == [
        {"address": a, "port": 3260, "epoch": ca["epoch"]},
        {"address": b, "port": 3261, "epoch": cb["epoch"]},
    ]
    assert beat["releasing"] == [] and beat["revision"] >= cb["revision"]
    assert beat["ttl_ms"] == 60_000
    got = await client.vip(a)
    assert got is not None and got["owner"] == node and got["epoch"] == ca["epoch"]
    assert {a, b} <= {v["address"] for v in (await client.vips())["items"]}
    with pytest.raises(Conflict) as err:
        await client.heartbeat(node, lease + 10**9)
    assert err.value.code == "stale_lease"
    with pytest.raises(Conflict) as err:
        await client.create_vip(a)
    assert err.value.code == "exists"


async def test_a_node_that_stops_heartbeating_loses_its_vip(client: Client) -> None:
    ((quiet, lease),) = await fresh_nodes(client, 1, ttl_ms=1500)
    addr = vip_address()
    assert (await client.create_vip(addr))["owner"] == quiet
    ((other, _),) = await fresh_nodes(client, 1)
    # Heartbeats keep it for well over its TTL...
    for _ in range(8):
        beat = await client.heartbeat(quiet, lease)
        assert [v["address"] for v in beat["vips"]] == [addr]
        await asyncio.sleep(0.25)
    # ... then it goes quiet: the leader counts its TTL out and the VIP moves.

    async def moved() -> bool:
        vip = await client.vip(addr)
        return vip is not None and vip["owner"] == other

    await until("the VIP moves to the live node", moved)
    gone = await client.node(quiet)
    assert gone is not None and gone["live"] is False
    with pytest.raises(Conflict) as err:
        await client.heartbeat(quiet, lease)
    assert err.value.code == "stale_lease"


async def test_drain_releases_vips_and_released_hands_them_over(client: Client) -> None:
    ((a, lease_a),) = await fresh_nodes(client, 1)
    addr = vip_address()
    await client.create_vip(addr)
    ((b, lease_b),) = await fresh_nodes(client, 1)
    assert (await client.drain(a))["changed"] is True

    vip = await client.vip(addr)
    assert vip is not None and vip["owner"] == a and vip["releasing"] is True
    beat = await client.heartbeat(a, lease_a)
    assert beat["vips"] == [] and beat["releasing"] == [
        {"address": addr, "epoch": vip["epoch"], "lease": lease_a}
    ]
    assert (await client.heartbeat(b, lease_b))["vips"] == []
    with pytest.raises(PreconditionFailed):
        await client.vip_released(addr, vip["epoch"] + 1, lease_a)
    with pytest.raises(PreconditionFailed):
        await client.vip_released(addr, vip["epoch"], lease_b)
    handed = await client.vip_released(addr, vip["epoch"], lease_a)
    assert handed["owner"] == b and handed["epoch"] > vip["epoch"]
    assert [v["address"] for v in (await client.heartbeat(b, lease_b))["vips"]] == [addr]

    # Moving it back: released by b first, then a has it.
    await client.undrain(a)
    moving = await client.move_vip(addr, to=a)
    assert moving["releasing"] is True and moving["owner"] == b and moving["target"] == a
    back = await client.vip_released(addr, moving["epoch"], lease_b)
    assert back["owner"] == a
    # Deleting an owned VIP waits for its holder to let go.
    deleting = await client.delete_vip(addr)
    assert deleting["deleting"] is True
    vip = await client.vip(addr)
    assert vip is not None
    assert (await client.vip_released(addr, vip["epoch"], lease_a))["deleted"] is True
    assert await client.vip(addr) is None


async def test_a_node_is_deleted_only_once_it_is_not_live(cluster: Cluster, client: Client) -> None:
    ((node, lease),) = await fresh_nodes(client, 1)
    with pytest.raises(Conflict) as err:
        await client.delete_node(node)
    assert err.value.code == "in_use" and "live" in err.value.message
    await client.revoke(lease)  # the agent's lease revoked by hand: not live any more
    gone = await client.node(node)
    assert gone is not None and gone["live"] is False
    assert (await client.delete_node(node))["deleted"] is True
    assert await client.node(node) is None
    # With nothing eligible, a VIP waits unowned and a move has nowhere to go.
    addr = vip_address()
    assert (await client.create_vip(addr))["owner"] is None
    leader = cluster.wait_ready()
    status, doc = raw(cluster, leader, "POST", f"/v1/vips/{addr}/move", b"{}")
    assert (status, doc["error"]["code"]) == (503, "no_live_node")


# ---- cache, forwarding, documentation ------------------------------------------------------


async def test_map_cache_follows_changes(client: Client) -> None:
    async with MapCache(client, progress_ms=200) as cache:
        pol = uid("p")
        made = await client.put_policy(pol, replicas=1)
        await cache.wait_for(made["revision"], timeout=10)
        assert cache.revision >= made["revision"] and cache.policies[pol]["replicas"] == 1

        ((node, _),) = await fresh_nodes(client, 1)
        addr = vip_address()
        created = await client.create_vip(addr)
        await cache.wait_for(created["revision"], timeout=10)
        assert cache.nodes[node]["live"] is True
        assert cache.vips[addr]["owner"] == node and cache.vips[addr]["epoch"] == created["epoch"]

        drained = await client.drain(node)
        await cache.wait_for(drained["revision"], timeout=10)
        assert cache.nodes[node]["drained"] is True and cache.vips[addr]["releasing"] is True

        deleted = await client.delete_policy(pol)
        await cache.wait_for(deleted["revision"], timeout=10)
        assert pol not in cache.policies
        # The copy is the map: the same records as a listing at the same revision
        # (the leader's timers may change VIPs of earlier tests meanwhile: look again).

        async def same() -> bool:
            listing = await client.vips()
            await cache.wait_for(listing["revision"], timeout=10)
            if cache.revision != listing["revision"]:
                return False
            assert {v["address"]: v for v in listing["items"]} == cache.vips
            return True

        await until("a listing at the cache's revision", same)
    with pytest.raises(TimeoutError):
        async with MapCache(client, progress_ms=200) as idle:
            await idle.wait_for(idle.revision + 10**6, timeout=0.3)


async def test_a_follower_forwards_map_writes_exactly_once(
    cluster: Cluster, client: Client
) -> None:
    leader = cluster.wait_ready()
    follower = next(i for i in cluster.procs if i != leader)
    pol = uid("fwd")
    status, doc = raw(cluster, follower, "PUT", f"/v1/policies/{pol}", b'{"replicas": 1}')
    assert status == 200 and doc["created"] is True, doc
    status, got = raw(cluster, leader, "GET", f"/v1/policies/{pol}")
    assert status == 200 and got["mod_revision"] == doc["revision"]
    # A retried write (same session and number) is answered, not applied, again.
    vip_body = json.dumps({"address": vip_address()}).encode()
    hdr = {"X-Coord-Client": uid("retrying-"), "X-Coord-Seq": "1"}
    s1, first = raw(cluster, follower, "POST", "/v1/vips", vip_body, hdr)
    s2, again = raw(cluster, follower, "POST", "/v1/vips", vip_body, hdr)
    assert s1 == s2 == 200 and again == {**first, "retried": True}
    await client.delete_policy(pol)


def test_every_map_route_is_documented() -> None:
    app = web.Application()
    mapapi.add_routes(app.router, None)  # type: ignore[arg-type]
    paths = openapi.DOCUMENT["paths"]
    routes = [
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    ]
    assert len(routes) == 30
    for method, path in routes:
        assert path in paths and method in paths[path], (method, path)
    # Every templated part of a path is declared, as OpenAPI requires.
    for path, item in paths.items():
        wanted = {p.strip("{}") for p in path.split("/") if p.startswith("{")}
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == wanted, (method, path)
            assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path")


# ---- the cache and the watch, without a cluster ----------------------------------------------


def _event(kind: str, key: str, rev: int, value: dict[str, Any] | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": kind, "key": f"/coord/map/{key}", "revision": rev}
    if value is not None:
        ev["kv"] = {"value": json.dumps(value)}
    return ev


def test_map_cache_takes_in_whole_revisions_only() -> None:
    cache = MapCache(None)  # type: ignore[arg-type]
    cache.feed({"type": "relist", "revision": 10, "items": []})
    # One operation: a node registers and is given a VIP, at revision 12.
    cache.feed(_event("put", "nodes/n1", 12, {"id": "n1"}))
    assert cache.revision == 11 and cache.nodes == {}  # the rest of 12 may be on its way
    cache.feed(_event("put", "vips/127.0.10.1", 12, {"address": "127.0.10.1", "owner": "n1"}))
    cache.feed({"type": "progress", "revision": 12})
    assert cache.revision == 12 and set(cache.nodes) == {"n1"} and cache.vips
    cache.feed(_event("put", "sessions/v1/iqn.x:a", 14, {"volume": "v1"}))
    cache.feed(_event("delete", "vips/127.0.10.1", 15))
    assert cache.revision == 14 and "v1/iqn.x:a" in cache.sessions and cache.vips
    cache.feed({"type": "progress", "revision": 20})
    assert cache.revision == 20 and cache.vips == {}
    # Compacted history: the watch re-lists and the copy is rebuilt from the listing.
    item = {"key": "/coord/map/policies/p", "value": json.dumps({"name": "p"})}
    cache.feed({"type": "relist", "revision": 30, "items": [item]})
    assert cache.revision == 30 and cache.relists == 2
    assert cache.policies == {"p": {"name": "p"}} and cache.nodes == {} and cache.sessions == {}


async def test_watch_resumes_inside_a_change_without_loss_or_repeat(tmp_path: Path) -> None:
    """A stream that breaks after two of a revision's three events resumes at that
    revision and skips the two: each event once, none lost."""
    events = [_event("put", f"vips/127.0.10.{i}", 5, {"i": i}) for i in range(3)]
    events.append(_event("put", "vips/127.0.10.9", 6, {"i": 9}))
    starts: list[int] = []
    done = asyncio.Event()

    async def watch(request: web.Request) -> web.StreamResponse:
        start = int(request.query["start_revision"])
        starts.append(start)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = [e for e in events if e["revision"] >= start]
        if len(starts) == 1:
            sent = sent[:2]  # then the connection breaks
        for e in sent:
            await resp.write(f"event: event\ndata: {json.dumps(e)}\n\n".encode())
        if len(starts) == 1:
            assert request.transport is not None
            request.transport.close()
            return resp
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 10)
        return resp

    app = web.Application()
    app.router.add_get("/v1/watch", watch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with Client([f"127.0.0.1:{port}"]) as c:
            got: list[dict[str, Any]] = []
            stream = c.watch("/coord/map/", start_revision=5, progress_ms=5000)
            async for ev in stream:
                got.append(ev)
                if len(got) == 4:
                    break
            await stream.aclose()  # type: ignore[attr-defined]
    finally:
        done.set()
        await runner.cleanup()
    assert [e["key"] for e in got] == [e["key"] for e in events]
    assert starts == [5, 5]
