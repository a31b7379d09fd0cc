"""The cluster map inside the state machine: placement, least-active assignment, VIP
hand-over and release, heal and rebuild — and, under random operations, indexes that
always equal what the keys say, and the map's invariants after every command."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coord.clustermap import model as m
from coord.clustermap.controller import MapController
from coord.clustermap.placement import Disk, Unplaceable, place, wanted
from coord.clustermap.state import ClusterMap
from coord.store import StateMachine

G = 1 << 30


class Map:
    """A state machine fed commands one log index at a time."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.index = 0

    def __call__(self, **cmd: Any) -> dict[str, Any]:
        self.index += 1
        cmd.setdefault("time_ms", 1_000 * self.index)
        result: dict[str, Any] = self.sm.apply(self.index, msgpack.packb(cmd))
        return result

    @property
    def cm(self) -> ClusterMap:
        return self.sm.map

    def register(self, node: str, *sizes_g: int, tier: str = "standard", ttl_ms: int = 1000) -> int:
        disks = [
            {"id": f"d{i + 1}", "size_bytes": s * G, "tier": tier} for i, s in enumerate(sizes_g)
        ]
        r = self(
            op="map.node_register",
            node=node,
            portal=f"127.0.0.{len(self.cm.nodes) + 1}:3260",
            disks=disks,
            ttl_ms=ttl_ms,
        )
        assert "error" not in r, r
        return int(r["lease"])

    def expire(self, node: str) -> None:
        r = self(op="lease_revoke", id=self.cm.nodes[node]["lease"], reason="expired")
        assert "error" not in r, r


def three_nodes(ttl_ms: int = 1000) -> Map:
    mp = Map()
    for n in ("n1", "n2", "n3"):
        mp.register(n, 100, 50, ttl_ms=ttl_ms)
    assert "error" not in mp(op="map.policy_put", name="gold", replicas=2, arbiter=True)
    return mp


# ---- placement -----------------------------------------------------------------------------


def disks(*spec: tuple[str, str, int]) -> list[Disk]:
    return [Disk(n, d, "standard", g * G) for n, d, g in spec]


def pol(**kw: Any) -> dict[str, Any]:
    return m.policy({"name": "p", "replicas": 2, **kw})


def test_scatter_puts_every_member_on_its_own_node_with_the_most_room() -> None:
    pool = disks(("a", "d1", 10), ("a", "d2", 90), ("b", "d1", 50), ("c", "d1", 70))
    slots = place(pol(arbiter=True), wanted(pol(arbiter=True), 5 * G), pool)
    assert [(s.role, s.node, s.disk) for s in slots] == [
        ("data", "a", "d2"),
        ("data", "c", "d1"),
        ("arbiter", "b", "d1"),
    ]


def test_aggregate_uses_as_few_nodes_as_possible_never_one_disk_twice() -> None:
    p = pol(placement="aggregate", replicas=3)
    pool = disks(("a", "d1", 10), ("b", "d1", 10), ("b", "d2", 10), ("b", "d3", 1))
    slots = place(p, wanted(p, 5 * G), pool)
    assert sorted((s.node, s.disk) for s in slots) == [("a", "d1"), ("b", "d1"), ("b", "d2")]


def test_unplaceable_says_what_is_missing() -> None:
    pool = disks(("a", "d1", 10), ("b", "d1", 3))
    with pytest.raises(Unplaceable) as e:
        place(pol(), wanted(pol(), 5 * G), pool)
    assert "needs 2 live, undrained nodes" in str(e.value) and "1 has one (a)" in str(e.value)
    ssd = m.policy({"name": "fast", "replicas": 1, "tier": "ssd"})
    with pytest.raises(Unplaceable, match="ssd disks; there are none"):
        place(ssd, wanted(ssd, G), pool)


def test_volume_create_places_by_policy_and_explains_a_refusal() -> None:
    mp = three_nodes()
    r = mp(op="map.volume_create", name="v1", size_bytes=10 * G, policy="gold")
    assert {x["node"] for x in r["replicas"]} == {"n1", "n2", "n3"}
    assert mp.cm.volumes["v1"]["state"] == "ok" and mp.cm.volumes["v1"]["quorum"] == 2
    r = mp(op="map.volume_create", name="v2", size_bytes=95 * G, policy="gold")
    assert r["error"]["code"] == "unplaceable" and "95.0 GiB free" in r["error"]["message"]
    assert mp(op="map.volume_create", name="v1", size_bytes=G, policy="gold")["error"]["code"] == (
        "exists"
    )
    assert mp(op="map.volume_create", name="v3", size_bytes=G, policy="nope")["error"]["code"] == (
        "not_found"
    )
    assert mp(op="map.policy_delete", name="gold")["error"]["code"] == "in_use"
    rev = mp.sm.kv.revision
    r = mp(op="map.volume_create", name="v4", size_bytes=G, policy="gold", iqn="not an iqn")
    assert r["error"]["code"] == "bad_request" and mp.sm.kv.revision == rev  # nothing changed


def test_a_volume_is_created_from_the_policy_version_its_caller_read() -> None:
    mp = three_nodes()
    seen = mp.cm.mod_revision(m.POLICIES + "gold")
    mp(op="map.policy_put", name="gold", replicas=3)
    r = mp(op="map.volume_create", name="v", size_bytes=G, policy="gold", policy_revision=seen)
    assert r["error"]["code"] == "precondition_failed"
    now = mp.cm.mod_revision(m.POLICIES + "gold")
    r = mp(op="map.volume_create", name="v", size_bytes=G, policy="gold", policy_revision=now)
    assert len(r["replicas"]) == 3 and mp.cm.volumes["v"]["policy_revision"] == now


def test_resize_grows_in_place_or_says_which_disk_is_short() -> None:
    mp = three_nodes()
    mp(op="map.volume_create", name="v", size_bytes=10 * G, policy="gold")
    assert mp(op="map.volume_resize", name="v", size_bytes=20 * G)["size_bytes"] == 20 * G
    assert mp.cm.used[("n1", "d1")] == 20 * G
    r = mp(op="map.volume_resize", name="v", size_bytes=200 * G)
    assert r["error"]["code"] == "unplaceable" and "needs" in r["error"]["message"]
    assert mp(op="map.volume_resize", name="v", size_bytes=G)["error"]["code"] == "bad_request"


# ---- sessions: least-active ----------------------------------------------------------------


def test_a_herd_of_logins_spreads_evenly_because_pending_sessions_count() -> None:
    mp = three_nodes()
    mp(op="map.volume_create", name="v", size_bytes=G, policy="gold")
    for i in range(300):
        assert "error" not in mp(op="map.session_assign", volume="v", initiator=f"iqn.h{i}")
    counts = sorted(len(s) for s in mp.cm.node_sessions.values())
    assert counts == [100, 100, 100]
    # Everyone on n1 logs in for real (its agent reports them); n1 dies; all reconnect.
    n1 = sorted(mp.cm.node_sessions["n1"])
    mp(
        op="map.sessions_report",
        node="n1",
        lease=mp.cm.nodes["n1"]["lease"],
        sessions=[s.split("/", 1) for s in n1],
    )
    mp.expire("n1")
    assert not mp.cm.node_sessions.get("n1")
    for sid in n1:
        volume, init = sid.split("/", 1)
        r = mp(op="map.session_assign", volume=volume, initiator=init)
        assert r["node"] in ("n2", "n3")
    assert sorted(len(s) for n, s in mp.cm.node_sessions.items() if n != "n1") == [150, 150]


def test_reports_replace_estimates_and_pending_sessions_expire_on_the_leaders_clock() -> None:
    mp = three_nodes()
    mp(op="map.volume_create", name="v", size_bytes=G, policy="gold")
    a = mp(op="map.session_assign", volume="v", initiator="iqn.a")
    assert a["state"] == "pending" and a["portal"] == mp.cm.nodes[a["node"]]["portal"]
    # The same login again lands on the same node (nothing changes).
    assert mp(op="map.session_assign", volume="v", initiator="iqn.a")["node"] == a["node"]
    b = mp(op="map.session_assign", volume="v", initiator="iqn.b")
    lease = mp.cm.nodes[a["node"]]["lease"]
    r = mp(op="map.sessions_report", node=a["node"], lease=lease, sessions=[["v", "iqn.a"]])
    assert r["added"] == 1 and mp.cm.sessions["v/iqn.a"]["state"] == "active"
    stale = mp(op="map.sessions_report", node=a["node"], lease=lease + 99, sessions=[])
    assert stale["error"]["code"] == "stale_lease"
    ctl = MapController(pending_ttl_s=10.0)
    ctl.lead(100.0)
    assert ctl.due(100.0, mp.cm) == []  # first seen: the countdown starts
    assert ctl.due(105.0, mp.cm) == []
    (cmd,) = ctl.due(110.0, mp.cm)
    assert cmd["op"] == "map.sessions_expire" and cmd["sessions"][0][0] == "v/iqn.b"
    assert ctl.due(110.5, mp.cm) == []  # proposed: not again at once
    assert mp(**cmd)["expired"] == 1 and b["node"] in mp.cm.nodes
    assert "v/iqn.b" not in mp.cm.sessions and "v/iqn.a" in mp.cm.sessions
    # The active one ends when its node stops reporting it.
    mp(op="map.sessions_report", node=a["node"], lease=lease, sessions=[])
    assert not mp.cm.sessions


def test_no_live_node_and_unknown_volume_are_refused() -> None:
    mp = Map()
    mp(op="map.policy_put", name="p", replicas=1)
    assert mp(op="map.session_assign", volume="v", initiator="i")["error"]["code"] == "not_found"
    mp.register("n1", 10)
    mp(op="map.volume_create", name="v", size_bytes=G, policy="p")
    mp(op="map.node_update", node="n1", drained=True)
    assert mp(op="map.session_assign", volume="v", initiator="i")["error"]["code"] == (
        "no_live_node"
    )


# ---- VIPs ----------------------------------------------------------------------------------


def test_vips_spread_and_move_at_the_revision_the_holders_lease_expires() -> None:
    mp = three_nodes()
    for i in range(1, 4):
        mp(op="map.vip_create", address=f"127.0.10.{i}")
    owners = {a: v["owner"] for a, v in mp.cm.vips.items()}
    assert sorted(owners.values()) == ["n1", "n2", "n3"]
    held = next(a for a, o in owners.items() if o == "n1")
    epoch = mp.cm.vips[held]["epoch"]
    mp.expire("n1")
    vip = mp.cm.vips[held]
    assert vip["owner"] in ("n2", "n3") and vip["epoch"] == mp.sm.kv.revision > epoch
    assert not mp.cm.nodes["n1"]["live"]
    # n1 comes back: it gets nothing taken from others, but new VIPs go to it first.
    mp.register("n1", 100, 50)
    assert mp(op="map.vip_create", address="127.0.10.9")["owner"] == "n1"


def test_a_vip_with_no_live_node_waits_and_is_assigned_as_soon_as_one_registers() -> None:
    mp = Map()
    assert mp(op="map.vip_create", address="127.0.10.1")["owner"] is None
    mp.register("n1", 10)
    assert mp.cm.vips["127.0.10.1"]["owner"] == "n1"


def test_drain_releases_and_only_the_holders_own_word_or_a_full_ttl_hands_over() -> None:
    mp = three_nodes(ttl_ms=1500)
    mp(op="map.vip_create", address="127.0.10.1")
    vip = mp.cm.vips["127.0.10.1"]
    owner, lease = vip["owner"], mp.cm.nodes[vip["owner"]]["lease"]
    mp(op="map.node_update", node=owner, drained=True)
    vip = mp.cm.vips["127.0.10.1"]
    assert vip["owner"] == owner and vip["releasing"] and vip["release_ttl_ms"] == 1500
    assert mp.cm.owned_vips(owner) == []  # its heartbeat now says: stop serving it
    assert mp.cm.releasing_vips(owner) == [
        {"address": "127.0.10.1", "epoch": vip["epoch"], "lease": lease}
    ]
    # Someone else's word (a newer agent of the node, another lease) is not enough.
    r = mp(op="map.vip_released", address="127.0.10.1", epoch=vip["epoch"], lease=lease + 1)
    assert r["error"]["code"] == "precondition_failed"
    r = mp(op="map.vip_released", address="127.0.10.1", epoch=vip["epoch"], lease=lease)
    assert r["owner"] not in (owner, None) and not mp.cm.vips["127.0.10.1"]["releasing"]
    # Without an answer: the leader's controller hands over after the full TTL.
    new_owner = mp.cm.vips["127.0.10.1"]["owner"]
    mp(op="map.vip_move", address="127.0.10.1", to=owner)  # refused: drained
    assert mp.cm.vips["127.0.10.1"]["owner"] == new_owner
    mp(op="map.vip_move", address="127.0.10.1")
    ctl = MapController()
    ctl.lead(0.0)
    assert ctl.due(0.0, mp.cm) == ctl.due(1.4, mp.cm) == []
    (cmd,) = ctl.due(1.6, mp.cm)
    assert cmd["op"] == "map.vip_release_expired"
    mp(**cmd)
    final = mp.cm.vips["127.0.10.1"]
    assert final["owner"] not in (owner, new_owner) and not final["releasing"]


def test_reregistering_or_revoking_by_hand_releases_instead_of_moving() -> None:
    mp = three_nodes()
    mp(op="map.vip_create", address="127.0.10.1")
    owner = mp.cm.vips["127.0.10.1"]["owner"]
    old = mp.cm.nodes[owner]["lease"]
    new = mp.register(owner, 100, 50)  # the agent restarted while its old lease still runs
    vip = mp.cm.vips["127.0.10.1"]
    assert vip["releasing"] and vip["release_lease"] == old and old not in mp.sm.leases
    # The new agent cannot vouch for the old one.
    r = mp(op="map.vip_released", address="127.0.10.1", epoch=vip["epoch"], lease=new)
    assert r["error"]["code"] == "precondition_failed"
    mp2 = three_nodes()
    mp2(op="map.vip_create", address="127.0.10.1")
    owner2 = mp2.cm.vips["127.0.10.1"]["owner"]
    mp2(op="lease_revoke", id=mp2.cm.nodes[owner2]["lease"])  # by hand: no TTL was counted
    assert mp2.cm.vips["127.0.10.1"]["releasing"] and not mp2.cm.nodes[owner2]["live"]


def test_the_controller_spreads_vips_one_release_at_a_time() -> None:
    mp = Map()
    mp.register("n1", 10)
    for i in range(1, 5):
        mp(op="map.vip_create", address=f"127.0.10.{i}")  # all on n1: nobody else is up
    mp.register("n2", 10)
    mp.register("n3", 10)
    ctl = MapController(rebalance_every_s=5.0)
    ctl.lead(0.0)
    assert ctl.due(4.9, mp.cm) == []  # a new leader lets agents come back first
    moves = 0
    t = 5.0
    while (cmds := [c for c in ctl.due(t, mp.cm) if c["op"] == "map.vip_move"]) and moves < 10:
        (cmd,) = cmds
        vip = mp(**cmd)
        assert vip["releasing"]  # a move is a release: the holder lets go first
        assert ctl.due(t + 5, mp.cm) == []  # nothing else moves while one is released
        mp(
            op="map.vip_released",
            address=cmd["address"],
            epoch=vip["epoch"],
            lease=mp.cm.nodes["n1"]["lease"],
        )
        moves += 1
        t += 5.0
    counts = sorted(len(mp.cm.node_vips.get(n, ())) for n in ("n1", "n2", "n3"))
    assert counts == [1, 1, 2] and moves == 2


def test_deleting_a_held_vip_waits_for_its_release() -> None:
    mp = three_nodes()
    mp(op="map.vip_create", address="127.0.10.1")
    r = mp(op="map.vip_delete", address="127.0.10.1")
    assert r["deleting"] and "127.0.10.1" in mp.cm.vips
    vip = mp.cm.vips["127.0.10.1"]
    mp(op="map.vip_release_expired", address="127.0.10.1", epoch=vip["epoch"])
    assert "127.0.10.1" not in mp.cm.vips
    assert mp(op="map.vip_create", address="not-an-ip")["error"]["code"] == "bad_request"


# ---- replicas --------------------------------------------------------------------------------


def test_accuse_heal_and_rebuild_after_too_many_failed_heals() -> None:
    mp = Map()
    for n in ("n1", "n2", "n3", "n4"):
        mp.register(n, 100)
    mp(op="map.policy_put", name="p", replicas=2, arbiter=True, max_heal_failures=2)
    mp(op="map.volume_create", name="v", size_bytes=10 * G, policy="p")
    r = mp(op="map.replica_accuse", volume="v", replica=1, by="n2")
    assert r["volume_state"] == "degraded"
    assert 1 not in mp.cm.volume_view("v")["io_replicas"]
    mp(op="map.replica_accuse", volume="v", replica=2, by="n1")
    assert mp.cm.volumes["v"]["state"] == "unwritable"  # 1 of 3 healthy: below the quorum
    mp(op="map.replica_heal", volume="v", replica=2, result="started")
    assert mp(op="map.replica_heal", volume="v", replica=2, result="ok")["state"] == "healthy"
    for _ in range(2):
        mp(op="map.replica_heal", volume="v", replica=1, result="failed")
    assert mp.cm.rebuild_waiting == {("v", 1)}
    ctl = MapController()
    ctl.lead(0.0)
    (cmd,) = ctl.due(0.0, mp.cm)
    started = mp(**cmd)["started"]
    used = {r["node"] for r in mp.cm.volumes["v"]["replicas"] if r["id"] != 4}
    assert started[0]["to"][0] not in used  # scatter: beside none of the others
    mp(op="map.rebuild_done", volume="v", replica=4, ok=True)
    reps = {r["id"]: r["state"] for r in mp.cm.volumes["v"]["replicas"]}
    assert reps == {1: "retired", 2: "healthy", 3: "healthy", 4: "healthy"}
    assert mp.cm.volumes["v"]["state"] == "ok" and not mp.cm.rebuild_waiting


def test_a_failed_rebuild_waits_again_and_a_heal_cancels_a_rebuild() -> None:
    mp = Map()
    for n in ("n1", "n2", "n3"):
        mp.register(n, 100)
    mp(op="map.policy_put", name="p", replicas=2, max_heal_failures=1)
    mp(op="map.volume_create", name="v", size_bytes=G, policy="p")
    mp(op="map.replica_accuse", volume="v", replica=1, by="x")
    mp(op="map.replica_heal", volume="v", replica=1, result="failed")
    mp(op="map.rebuild_schedule")
    mp(op="map.rebuild_done", volume="v", replica=3, ok=False)
    assert mp.cm.rebuild_waiting == {("v", 1)} and len(mp.cm.volumes["v"]["replicas"]) == 2
    mp(op="map.rebuild_schedule")
    assert mp.cm.rebuilds_on
    mp(op="map.replica_heal", volume="v", replica=1, result="ok")
    assert not mp.cm.rebuilds_on and [r["state"] for r in mp.cm.volumes["v"]["replicas"]] == [
        "healthy",
        "healthy",
    ]


def test_a_disk_holding_replicas_cannot_leave_its_node() -> None:
    mp = three_nodes()
    mp(op="map.volume_create", name="v", size_bytes=G, policy="gold")
    r = mp(op="map.node_register", node="n1", portal="127.0.0.1:3260", disks=[], ttl_ms=1000)
    assert r["error"]["code"] == "in_use" and "volumes v" in r["error"]["message"]
    r = mp(
        op="map.node_register",
        node="n1",
        portal="127.0.0.1:3260",
        ttl_ms=1000,
        disks=[{"id": "d1", "size_bytes": 1 << 20}, {"id": "d2", "size_bytes": 50 * G}],
    )
    assert r["error"]["code"] == "in_use"  # shrinking below what it holds


# ---- under random operations ---------------------------------------------------------------

NODES = ["n1", "n2", "n3", "n4"]
VOLS = ["v1", "v2", "v3"]
ADDRS = ["127.0.10.1", "127.0.10.2", "127.0.10.3"]
INITS = ["iqn.a", "iqn.b", "iqn.c", "iqn.d"]


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    node, vol, addr = (
        draw(st.sampled_from(NODES)),
        draw(st.sampled_from(VOLS)),
        draw(st.sampled_from(ADDRS)),
    )
    kind = draw(
        st.sampled_from(
            [
                "register",
                "expire",
                "revoke",
                "drain",
                "undrain",
                "policy",
                "create",
                "resize",
                "delete",
                "accuse",
                "heal",
                "rebuild",
                "rebuilt",
                "vip",
                "move",
                "vipdel",
                "released",
                "assign",
                "report",
                "expire_sessions",
                "release_expired",
                "nodedel",
            ]
        )
    )
    return {
        "kind": kind,
        "node": node,
        "vol": vol,
        "addr": addr,
        "n": draw(st.integers(1, 6)),
        "flag": draw(st.booleans()),
        "inits": draw(st.lists(st.sampled_from(INITS), max_size=3)),
    }


def pick(cm: ClusterMap, vol: str, states: tuple[str, ...], n: int) -> int:
    """A replica of ``vol`` in one of ``states`` (else replica ``n``: probably refused)."""
    ids = (
        [r["id"] for r in cm.volumes[vol]["replicas"] if r["state"] in states]
        if (vol in cm.volumes)
        else []
    )
    return ids[n % len(ids)] if ids else n


def run(mp: Map, c: dict[str, Any]) -> None:
    cm = mp.cm
    node, vol, addr, n, flag = c["node"], c["vol"], c["addr"], c["n"], c["flag"]
    rec = cm.nodes.get(node)
    match c["kind"]:
        case "register":
            mp(
                op="map.node_register",
                node=node,
                portal=f"127.0.1.{NODES.index(node)}:3260",
                disks=[{"id": "d1", "size_bytes": n * 10 * G}, {"id": "d2", "size_bytes": 20 * G}],
                ttl_ms=1000,
            )
        case "expire" | "revoke" if rec is not None and rec["live"]:
            mp(
                op="lease_revoke",
                id=rec["lease"],
                reason="expired" if c["kind"] == "expire" else "",
            )
        case "drain" | "undrain":
            mp(op="map.node_update", node=node, drained=c["kind"] == "drain")
        case "nodedel":
            mp(op="map.node_delete", node=node)
        case "policy":
            mp(
                op="map.policy_put",
                name="p",
                replicas=1 + n % 3,
                arbiter=flag,
                placement="aggregate" if n > 4 else "scatter",
                max_heal_failures=1 + n % 2,
            )
        case "create":
            mp(op="map.volume_create", name=vol, size_bytes=n * 3 * G, policy="p")
        case "resize":
            mp(op="map.volume_resize", name=vol, size_bytes=n * 4 * G)
        case "delete":
            mp(op="map.volume_delete", name=vol, force=flag)
        case "accuse":
            mp(op="map.replica_accuse", volume=vol, replica=1 + n % 4, by="t")
        case "heal":
            rid = pick(cm, vol, (m.ACCUSED, m.HEALING), n)
            mp(
                op="map.replica_heal",
                volume=vol,
                replica=rid,
                result=("started", "ok", "failed", "failed")[n % 4],
            )
        case "rebuild":
            mp(op="map.rebuild_schedule")
        case "rebuilt":
            mp(
                op="map.rebuild_done",
                volume=vol,
                replica=pick(cm, vol, (m.REBUILDING,), n),
                ok=flag,
            )
        case "vip":
            mp(op="map.vip_create", address=addr)
        case "move":
            mp(op="map.vip_move", address=addr, to=node if flag else None)
        case "vipdel":
            mp(op="map.vip_delete", address=addr)
        case "released" | "release_expired" if addr in cm.vips:
            v = cm.vips[addr]
            if c["kind"] == "released":
                mp(op="map.vip_released", address=addr, epoch=v["epoch"], lease=v["release_lease"])
            else:
                mp(op="map.vip_release_expired", address=addr, epoch=v["epoch"])
        case "assign":
            for i in c["inits"]:
                mp(op="map.session_assign", volume=vol, initiator=i)
        case "report" if rec is not None:
            mp(
                op="map.sessions_report",
                node=node,
                lease=rec["lease"],
                sessions=[[vol, i] for i in c["inits"]],
            )
        case "expire_sessions":
            rows = [[s, cm.mod_revision(m.SESSIONS + s)] for s in sorted(cm.pending)]
            mp(op="map.sessions_expire", sessions=rows[:n])


def check_invariants(mp: Map, epochs: dict[str, int]) -> None:
    cm = mp.cm
    fresh = ClusterMap(cm.kv)
    fresh.reload(cm.kv)
    for attr in (
        "nodes",
        "policies",
        "volumes",
        "vips",
        "sessions",
        "by_lease",
        "used",
        "rebuilds_on",
        "policy_users",
        "iqns",
        "pending",
        "releasing",
        "rebuild_waiting",
    ):
        assert getattr(fresh, attr) == getattr(cm, attr), attr
    for attr in ("node_sessions", "node_vips"):
        live = {k: v for k, v in getattr(cm, attr).items() if v}
        assert live == {k: v for k, v in getattr(fresh, attr).items() if v}, attr
    for (nid, did), used in cm.used.items():
        size = next(d["size_bytes"] for d in cm.nodes[nid]["disks"] if d["id"] == did)
        assert 0 < used <= size, (nid, did)
    for addr, v in cm.vips.items():
        assert v["epoch"] >= epochs.get(addr, 0)
        epochs[addr] = v["epoch"]
        if v["owner"] is not None and not v["releasing"]:
            assert cm.nodes[v["owner"]]["live"], f"{addr} owned by a dead node without release"
        if v["owner"] is None and cm.eligible():
            raise AssertionError(f"{addr} unowned while {cm.eligible()} could take it")
    for vol in cm.volumes.values():
        assert all(r["state"] == m.HEALTHY for r in m.io_replicas(vol))
        assert vol["state"] == m.volume_state(vol)
    for s in cm.sessions.values():
        assert s["volume"] in cm.volumes and s["node"] in cm.nodes
        assert cm.nodes[s["node"]]["live"], "a session on a node whose lease expired"


def populated() -> Map:
    """Three live nodes, a policy, two volumes, a VIP: random commands start from there."""
    mp = Map()
    for n in NODES[:3]:
        run(
            mp,
            {
                "kind": "register",
                "node": n,
                "vol": "",
                "addr": "",
                "n": 5,
                "flag": False,
                "inits": [],
            },
        )
    mp(op="map.policy_put", name="p", replicas=2, arbiter=True, max_heal_failures=1)
    mp(op="map.volume_create", name="v1", size_bytes=5 * G, policy="p")
    mp(op="map.volume_create", name="v2", size_bytes=2 * G, policy="p")
    mp(op="map.vip_create", address=ADDRS[0])
    return mp


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands(), min_size=1, max_size=60))
def test_random_operations_keep_indexes_true_and_the_map_whole(cmds: list[dict[str, Any]]) -> None:
    mp = populated()
    epochs: dict[str, int] = {}
    for c in cmds:
        run(mp, c)
        check_invariants(mp, epochs)
    copy = StateMachine()
    copy.restore(mp.sm.snapshot())
    assert copy.snapshot() == mp.sm.snapshot()
