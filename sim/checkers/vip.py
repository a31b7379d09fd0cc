"""Checkers for VIPs and the cluster map, fed from what agents do and replicas apply.

VipChecker, in real time, from the agents' own serving decisions (each agent
tells it the instant its set of served VIPs changes):

- vip-overlap: two agents never serve one VIP at the same instant. Intervals
  are half-open: one agent stopping at t and another starting at t is fine.
- vip-stale-holder: when any replica applies a hand-over of a VIP (a record
  with an owner, not being released, at epoch e), no agent is still serving
  that VIP at an older epoch. This is the promise the map's reactions rest
  on (apply.py): the leader moves a VIP only once its holder has stopped.
  It bites even when the new owner has not started yet.
- vip-epoch-served: the epochs served for a VIP, over real time and across
  agents, never go down (the epoch is the fencing token).

MapChecker, on every apply on every replica:

- vip-epoch: each replica sees each VIP's epoch only increase (several
  changes inside one revision share it).
- accused-in-io: no replica the record calls accused, healing, rebuilding or
  retired is in the volume's io set as the map answers it (``volume_view``);
  and a volume the map calls "ok" has every live member healthy.
- map-index: at the end, the indexes rebuilt from the keys (a fresh
  ClusterMap over the same store, ``reload``) equal the live ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coord.clustermap import model as m
from coord.clustermap.state import ClusterMap
from coord.store.mvcc import Event

if TYPE_CHECKING:
    from coord.store import StateMachine

Report = Callable[[str, tuple[int, ...], str], None]

NOT_IO = (m.ACCUSED, m.HEALING, m.REBUILDING, m.RETIRED)
INDEXES = (
    "nodes",
    "policies",
    "volumes",
    "vips",
    "sessions",
    "by_lease",
    "node_sessions",
    "node_vips",
    "used",
    "rebuilds_on",
    "policy_users",
    "iqns",
    "pending",
    "releasing",
    "rebuild_waiting",
)


@dataclass
class Interval:
    address: str
    agent: str
    epoch: int
    start_us: int
    end_us: int | None = None


class VipChecker:
    def __init__(self, report: Report) -> None:
        self.report = report
        self.intervals: list[Interval] = []
        self.open: dict[str, dict[str, Interval]] = {}  # address -> agent -> interval
        self.top_epoch: dict[str, int] = {}  # highest epoch ever served, per address
        self._stale_seen: set[tuple[str, str, int]] = set()

    def changed(self, agent: str, old: dict[str, int], new: dict[str, int], now: int) -> None:
        for addr in sorted(old):
            if new.get(addr) != old[addr]:
                iv = self.open.get(addr, {}).pop(agent, None)
                if iv is not None:
                    iv.end_us = now
        for addr in sorted(new):
            epoch = new[addr]
            if old.get(addr) == epoch:
                continue
            holders = self.open.setdefault(addr, {})
            for other in sorted(holders):
                iv = holders[other]
                self.report(
                    "vip-overlap",
                    (),
                    f"{agent} starts serving {addr} (epoch {epoch}) while {other} serves it "
                    f"(epoch {iv.epoch}, since {iv.start_us / 1e6:.3f}s)",
                )
            top = self.top_epoch.get(addr, 0)
            if epoch < top:
                self.report(
                    "vip-epoch-served",
                    (),
                    f"{agent} serves {addr} at epoch {epoch}, but epoch {top} was served before",
                )
            self.top_epoch[addr] = max(top, epoch)
            iv = Interval(addr, agent, epoch, now)
            holders[agent] = iv
            self.intervals.append(iv)

    def handed_over(self, nid: int, addr: str, epoch: int, owner: str) -> None:
        """Replica ``nid`` applied: ``addr`` belongs to ``owner`` at ``epoch``, settled."""
        for agent, iv in sorted(self.open.get(addr, {}).items()):
            key = (addr, agent, epoch)
            if iv.epoch < epoch and key not in self._stale_seen:
                self._stale_seen.add(key)
                self.report(
                    "vip-stale-holder",
                    (nid,),
                    f"n{nid} applied {addr} -> {owner} at epoch {epoch} while {agent} still "
                    f"serves it at epoch {iv.epoch} (since {iv.start_us / 1e6:.3f}s)",
                )

    def finish(self, now: int) -> None:
        for holders in self.open.values():
            for iv in holders.values():
                if iv.end_us is None:
                    iv.end_us = now

    def served(self, addr: str) -> list[Interval]:
        return [iv for iv in self.intervals if iv.address == addr]


class MapChecker:
    def __init__(self, report: Report, vips: VipChecker) -> None:
        self.report = report
        self.vips = vips
        self.epochs: dict[int, dict[str, tuple[int, int]]] = {}  # node -> addr -> (epoch, rev)

    def forget(self, nid: int) -> None:
        self.epochs.pop(nid, None)

    def on_events(self, nid: int, sm: StateMachine, events: list[Event]) -> None:
        for e in events:
            if e.kv is None:
                continue
            if e.key.startswith(m.VIPS):
                self._vip(nid, e.revision, m.decode(e.kv.value))
            elif e.key.startswith(m.VOLUMES) and e.revision == sm.kv.revision:
                name = e.key[len(m.VOLUMES) :]
                if name in sm.map.volumes:
                    self._volume(nid, sm.map.volume_view(name))

    def _vip(self, nid: int, rev: int, rec: dict[str, Any]) -> None:
        addr, epoch = rec["address"], int(rec["epoch"])
        seen = self.epochs.setdefault(nid, {})
        last = seen.get(addr)
        if last is not None and (epoch < last[0] or (epoch == last[0] and rev != last[1])):
            self.report(
                "vip-epoch",
                (nid,),
                f"n{nid}: VIP {addr} went from epoch {last[0]} (revision {last[1]}) to {epoch} "
                f"(revision {rev})",
            )
        seen[addr] = (epoch, rev)
        if rec["owner"] is not None and not rec["releasing"]:
            self.vips.handed_over(nid, addr, epoch, rec["owner"])

    def _volume(self, nid: int, view: dict[str, Any]) -> None:
        states = {r["id"]: r["state"] for r in view["replicas"]}
        bad = sorted(i for i in view["io_replicas"] if states.get(i) in NOT_IO)
        if bad:
            self.report(
                "accused-in-io",
                (nid,),
                f"n{nid}: volume {view['name']} offers replicas {bad} for I/O, but they are "
                f"{[states[i] for i in bad]}",
            )
        live = [r for r in view["replicas"] if r["state"] != m.RETIRED and not r.get("replaces")]
        if view["state"] == "ok" and any(r["state"] != m.HEALTHY for r in live):
            self.report(
                "accused-in-io",
                (nid,),
                f"n{nid}: volume {view['name']} is 'ok' with members "
                f"{[(r['id'], r['state']) for r in live]}",
            )

    def check_indexes(self, nid: int, cm: ClusterMap) -> None:
        fresh = ClusterMap(cm.kv)
        fresh.reload(cm.kv)
        for attr in INDEXES:
            live, rebuilt = _plain(getattr(cm, attr)), _plain(getattr(fresh, attr))
            if live != rebuilt:
                # Dicts and sets alike: which entries are on one side only.
                only = sorted(set(live) ^ set(rebuilt), key=repr)
                self.report(
                    "map-index",
                    (nid,),
                    f"n{nid}: index {attr!r} differs from the one rebuilt from the keys "
                    f"(entries on one side only: {only[:5]}; live {_brief(live)}, "
                    f"rebuilt {_brief(rebuilt)})",
                )


def _brief(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 200 else text[:200] + "..."


def _plain(v: Any) -> Any:
    """An index with its empty buckets dropped (removing the last item may leave one)."""
    if isinstance(v, dict):
        return {k: x for k, x in v.items() if x != set()}
    return v
