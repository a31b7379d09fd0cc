"""The local demo's target side (``coord cluster up``): agents with tgtd, a VIP, a volume.

Everything stays on loopback: node N's tgtd listens on SUBNET.(20+N):3260 and
the VIP is a 127.x address whose portal only the VIP's holder binds. Where
tgtd cannot run (not installed, not root) the agents still register, hold
the VIP and redirect logins, and this says plainly what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .cli import agent_command
from .tgt import unavailable

VOLUME = "demo"
POLICY = "demo"
VOLUME_BYTES = 1 << 30


def _call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start_targets(args: argparse.Namespace, d: Path, apis: list[str]) -> dict[str, int]:
    """Start the agents, then create the demo's policy, volume and VIP; their PIDs."""
    why = unavailable()
    if why is not None:
        print(f"coord: without tgtd ({why}): logins are redirected, but nothing is exported")
    pids: dict[str, int] = {}
    base = f"http://{apis[0]}"
    for i in range(1, args.targets + 1):
        node = f"t{i}"
        # tgtd's control ports stop at 32767; one cluster's three stay together.
        port = args.base_port // 10 + i if why is None else 0
        portal = f"{args.target_subnet}.{20 + i}:3260"
        cmd = agent_command(node, apis, portal, d, control_port=port)
        log = open(d / f"target-{node}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pids[node] = proc.pid
    deadline = time.monotonic() + 20
    live = 0
    while time.monotonic() < deadline:
        status, doc = _call("GET", f"{base}/v1/nodes")
        live = sum(1 for n in doc.get("items", []) if n.get("live")) if status == 200 else 0
        if live >= args.targets:
            break
        time.sleep(0.2)
    if live < args.targets:
        print(f"coord: only {live} of {args.targets} target nodes came up; see {d}/target-*.log")
        return pids
    # Two data replicas and an arbiter need three nodes; with fewer, what fits.
    policy = {"replicas": min(2, args.targets), "arbiter": args.targets >= 3}
    _call("PUT", f"{base}/v1/policies/{POLICY}", policy)
    status, doc = _call(
        "POST", f"{base}/v1/volumes", {"name": VOLUME, "size_bytes": VOLUME_BYTES, "policy": POLICY}
    )
    error = doc.get("error", {}) if status != 200 else {}
    if error and error.get("code") != "exists":  # exists: a restarted demo keeps its volume
        print(f"coord: the demo volume was not created: {error.get('message', doc)}")
    _call("POST", f"{base}/v1/vips", {"address": args.vip})
    served = _wait_listening(args.vip, 3260, 10.0)
    last = f"{args.target_subnet}.{20 + args.targets}"
    print(f"coord: {args.targets} target nodes up (tgtd on {args.target_subnet}.21 to {last})")
    for i in range(1, args.targets + 1):
        print(f"  target t{i}: pid {pids[f't{i}']}  log {d}/target-t{i}.log")
    state = "served" if served else "NOT served yet"
    print(f"  VIP {args.vip}:3260 {state}; volume {VOLUME!r} (1 GiB)")
    return pids


def _wait_listening(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def print_iscsi_hints(args: argparse.Namespace) -> None:
    iqn = f"iqn.2026-12.io.coord:{VOLUME}"
    if shutil.which("iscsi-inq") is None:
        print("  (install libiscsi-bin for iscsi-inq, iscsi-ls, iscsi-readcapacity16, iscsi-perf)")
    print(f"  iscsi-ls iscsi://{args.vip}:3260                      # discovery through the VIP")
    print(f"  iscsi-inq iscsi://{args.vip}:3260/{iqn}/1   # redirected to the least-active node")
    print(f"  iscsi-readcapacity16 iscsi://{args.vip}:3260/{iqn}/1")


def reap_tgtds(d: Path) -> list[int]:
    """After the agents were stopped: any tgtd one of them left (it was killed before it
    could stop its tgtd) is killed by the PID the agent recorded, if it really is a tgtd."""
    reaped = []
    for f in sorted(d.glob("t*.pids")):
        try:
            pid = json.loads(f.read_text()).get("tgtd")
        except (OSError, ValueError):
            continue
        if not isinstance(pid, int):
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue  # gone already
        if comm == "tgtd":
            os.kill(pid, signal.SIGKILL)  # tgtd ignores SIGTERM
            reaped.append(pid)
    return reaped
