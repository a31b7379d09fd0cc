"""Scale: a store of a million keys and a map of 100,000 volumes — snapshot, restart, memory.

    python -m bench.scale [--keys 1000000] [--volumes 100000] [--tail 5000]

How the data gets there (fast, and not through the network): the benchmark
process drives coord's ``StateMachine`` (coord/store/machine.py) directly, one
log index at a time, with the very commands a leader would put in the log
(msgpack, through ``StateMachine.apply``): 30 target nodes with 4 disks of
64 TiB each registered with ``map.node_register`` (leases of the maximum 600 s
TTL, so none expires while we measure), one policy (2 data replicas + an
arbiter, scatter), then the keys (``put``, 100-byte values) and the volumes
(``map.volume_create``, 1-64 GiB, placed by the real placement code)
interleaved, so the store's bounded history (the last 100,000 events) holds a
mix of both.

Then, with coord's own code:

- *snapshot*: ``StateMachine.snapshot()`` (the serialisation the daemon runs on
  its event loop every ``snapshot_every`` entries), then ``Storage.compact``
  (the snapshot file written, fsynced, renamed, the directory fsynced, and a
  fresh WAL segment pointing at it) — the size of the file and both times.
- a log tail of ``--tail`` puts after the snapshot, written to the WAL in
  batches of 64 entries per fdatasync, as the daemon would have. (A running node
  keeps between ``snapshot_keep`` = 5,000 and ``snapshot_every`` +
  ``snapshot_keep`` = 15,000 entries after its newest snapshot.)
- *restart*: a real daemon, ``python -m coord run`` as a one-member cluster on
  127.0.0.1, on that data directory: the time from spawning the process until
  ``GET /v1/cluster`` reports every log entry applied (that includes Python's
  start-up and imports, reading and checking the snapshot, rebuilding the store
  and the map's indexes, replaying the tail, and the node's first election,
  which waits one randomized election timeout, 300-600 ms at the defaults);
  then its resident memory (VmRSS) and its peak (VmHWM). The same restart is
  also timed step by step inside the benchmark process (``Storage.open``,
  ``StateMachine.restore``, applying the tail).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procutil import Procs, free_port_block, http_ok, rss_bytes

NODES = 30
DISKS_PER_NODE = 4
TIB = 1 << 40
GIB = 1 << 30
VALUE = "v" * 100
BATCH = 64


@dataclass
class ScaleResult:
    keys: int
    volumes: int
    tail: int
    load_s: float
    loader_rss: int
    snap_serialize_s: float
    snap_write_s: float
    snap_bytes: int
    open_s: float
    restore_s: float
    replay_s: float
    daemon_ready_s: float
    daemon_rss: int
    daemon_hwm: int
    map_volumes_seen: int
    catch_up_s: float  # a new member, from being added to having applied everything


def _load(sm: Any, keys: int, volumes: int) -> int:
    """Fill the state machine; the last log index used."""
    from coord.store import encode

    index = 0

    def apply(cmd: dict[str, Any]) -> dict[str, Any]:
        nonlocal index
        index += 1
        cmd["time_ms"] = 1_700_000_000_000 + index
        result: dict[str, Any] = sm.apply(index, encode(cmd))
        if "error" in result:
            raise RuntimeError(f"{cmd['op']}: {result['error']}")
        return result

    for n in range(NODES):
        disks = [
            {"id": f"d{j}", "size_bytes": 64 * TIB, "tier": "standard"}
            for j in range(DISKS_PER_NODE)
        ]
        apply(
            {
                "op": "map.node_register",
                "node": f"n{n:02d}",
                "portal": f"127.0.1.{n + 1}:3260",
                "disks": disks,
                "ttl_ms": 600_000,
            }
        )
    apply({"op": "map.policy_put", "name": "gold", "replicas": 2, "arbiter": True})
    # Interleave: one volume after every keys/volumes puts.
    every = max(1, keys // volumes) if volumes else keys + 1
    k = v = 0
    while k < keys or v < volumes:
        if k < keys:
            apply({"op": "put", "key": f"bench/scale/{k:08d}", "value": VALUE})
            k += 1
        if v < volumes and (k % every == 0 or k >= keys):
            size = (1 + v % 64) * GIB
            apply(
                {
                    "op": "map.volume_create",
                    "name": f"vol-{v:07d}",
                    "size_bytes": size,
                    "policy": "gold",
                }
            )
            v += 1
    return index


def run_scale(keys: int, volumes: int, tail: int = 5000) -> ScaleResult:
    from coord.raft import ConfState, Entry, EntryKind, HardState, Index, NodeId, Term
    from coord.raft.types import Snapshot, SnapshotMeta
    from coord.storage import Storage
    from coord.store import StateMachine, encode

    base = free_port_block([1, 2, 101, 102])
    peer, api = f"127.0.0.1:{base + 1}", f"127.0.0.1:{base + 101}"
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="coord-bench-scale-") as tmp:
        d = Path(tmp)
        try:
            sm = StateMachine()
            t0 = time.perf_counter()
            last = _load(sm, keys, volumes)
            load_s = time.perf_counter() - t0
            loader_rss = rss_bytes(os.getpid())[0]
            sm.members = {1: {"peer": peer, "api": api}}

            t0 = time.perf_counter()
            data = sm.snapshot()
            snap_serialize_s = time.perf_counter() - t0
            del sm
            gc.collect()

            storage = Storage(d / "node-1")
            storage.open()
            snap = Snapshot(SnapshotMeta(Index(last), Term(1), ConfState((NodeId(1),), ())), data)
            storage.hard_state = HardState(Term(1), NodeId(1), Index(last))
            t0 = time.perf_counter()
            storage.compact(snap, [])
            snap_write_s = time.perf_counter() - t0
            del data, snap
            snap_bytes = sum(p.stat().st_size for p in (d / "node-1" / "snap").glob("*.snap"))

            # The log tail after the snapshot, as the daemon writes it.
            ms = 1_800_000_000_000
            for first in range(last + 1, last + tail + 1, BATCH):
                upto = min(first + BATCH, last + tail + 1)
                batch = [
                    Entry(
                        Index(i),
                        Term(1),
                        EntryKind.NORMAL,
                        encode(
                            {
                                "op": "put",
                                "key": f"bench/tail/{i % 1000:04d}",
                                "value": VALUE,
                                "time_ms": ms + i,
                            }
                        ),
                    )
                    for i in range(first, upto)
                ]
                storage.wal.append_entries(batch)
                storage.wal.set_hard_state(HardState(Term(1), NodeId(1), Index(upto - 1)))
                storage.wal.sync()
            storage.close()
            end = last + tail

            # The restart, step by step, in this process.
            gc.collect()
            st2 = Storage(d / "node-1")
            t0 = time.perf_counter()
            restored = st2.open()
            open_s = time.perf_counter() - t0
            sm2 = StateMachine()
            t0 = time.perf_counter()
            assert restored.snapshot is not None
            sm2.restore(restored.snapshot.data)
            restore_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for e in restored.entries:
                sm2.apply(int(e.index), e.data)
            replay_s = time.perf_counter() - t0
            seen = len(sm2.map.volumes)
            st2.close()
            del sm2, restored, st2
            gc.collect()

            # The restart, for real: a one-member daemon on that directory.
            secret = d / "secret"
            secret.write_text(secrets.token_hex(32))
            cmd = [sys.executable, "-m", "coord", "run", "--id", "1", "--data-dir", str(d)]
            cmd += ["--secret-file", str(secret), "--member", f"1={peer}/{api}"]
            cmd += ["--log-level", "warning"]
            t0 = time.perf_counter()
            p = procs.start("coord-1", cmd, d / "coord-1.log")
            ready = None
            deadline = t0 + 600
            while time.perf_counter() < deadline and p.poll() is None:
                body = http_ok(f"http://{api}/v1/cluster", timeout=2)
                if body:
                    st = json.loads(body)
                    if st.get("leader") and st.get("applied_index", 0) >= end:
                        ready = time.perf_counter() - t0
                        break
                time.sleep(0.02)
            if ready is None:
                log = (d / "coord-1.log").read_text()[-3000:]
                raise RuntimeError(f"the daemon did not come back within 600 s:\n{log}")
            time.sleep(0.5)
            rss, hwm = rss_bytes(p.pid)
            catch_up = _catch_up(procs, d, secret, peer, api, base, end)
        finally:
            procs.stop_all()
    return ScaleResult(
        keys,
        volumes,
        tail,
        load_s,
        loader_rss,
        snap_serialize_s,
        snap_write_s,
        snap_bytes,
        open_s,
        restore_s,
        replay_s,
        ready,
        rss,
        hwm,
        seen,
        catch_up,
    )


def _catch_up(
    procs: Procs, d: Path, secret: Path, peer: str, api: str, base: int, end: int
) -> float:
    """A new member with an empty disk joins as a learner: the seconds until it has
    applied everything (the whole snapshot crosses the network in one InstallSnapshot)."""
    peer2, api2 = f"127.0.0.1:{base + 2}", f"127.0.0.1:{base + 102}"
    cmd = [sys.executable, "-m", "coord", "run", "--id", "2", "--data-dir", str(d / "n2")]
    cmd += ["--secret-file", str(secret), "--member", f"1={peer}/{api}", "--join"]
    cmd += ["--member", f"2={peer2}/{api2}", "--log-level", "warning"]
    procs.start("coord-2", cmd, d / "coord-2.log")
    started = time.perf_counter()
    while not http_ok(f"http://{api2}/healthz", timeout=2):
        if time.perf_counter() - started > 60:
            raise RuntimeError("the new member did not start within 60 s")
        time.sleep(0.05)
    t0 = time.perf_counter()
    body = json.dumps({"id": 2, "peer": peer2, "api": api2, "voter": False}).encode()
    req = urllib.request.Request(
        f"http://{api}/v1/cluster/members",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30):
        pass
    deadline = t0 + 600
    while time.perf_counter() < deadline:
        got = http_ok(f"http://{api2}/v1/cluster", timeout=5)
        if got and json.loads(got).get("applied_index", 0) >= end:
            return time.perf_counter() - t0
        time.sleep(0.05)
    log = (d / "coord-2.log").read_text()[-3000:]
    raise RuntimeError(f"the new member did not catch up within 600 s:\n{log}")


def mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def render(results: list[ScaleResult]) -> str:
    lines = [
        "| keys | volumes | log tail | snapshot | serialise s | write+fsync s | restart: ready s "
        "| open / restore / replay s | daemon RSS | daemon peak RSS | new member caught up s "
        "| load s (in-process) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.keys:,} | {r.volumes:,} | {r.tail:,} | {mib(r.snap_bytes)} "
            f"| {r.snap_serialize_s:.2f} | {r.snap_write_s:.2f} | {r.daemon_ready_s:.2f} "
            f"| {r.open_s:.2f} / {r.restore_s:.2f} / {r.replay_s:.2f} "
            f"| {mib(r.daemon_rss)} | {mib(r.daemon_hwm)} | {r.catch_up_s:.1f} | {r.load_s:.0f} |"
        )
    return "\n".join(lines)


def run(keys: int = 1_000_000, volumes: int = 100_000, tail: int = 5000) -> str:
    return render([run_scale(keys, volumes, tail)])


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--volumes", type=int, default=100_000)
    ap.add_argument("--tail", type=int, default=5000)
    args = ap.parse_args()
    print(run(args.keys, args.volumes, args.tail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
