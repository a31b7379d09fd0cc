"""Run every benchmark and write docs/benchmarks.md.

    python -m bench [--out docs/benchmarks.md] [--seconds 5] [--vip-trials 20]
    python -m bench --only vip        # re-run one section, keep the others as they are

Each benchmark measures coord and, where one exists, the system a user would
pick instead, in the same run on the same machine, and reports the ratio.
Figures from a shared 2-core VM are noisy; compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from bench import api, vip

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    etcd = "not installed"
    if shutil.which("etcd"):
        out = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
        etcd = out.splitlines()[0].removeprefix("etcd Version: ") if out else "unknown"
    return (
        f"- machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"Linux {platform.release()}\n"
        f"- Python {platform.python_version()}; etcd {etcd}\n"
        f"- date: {datetime.date.today().isoformat()}"
    )


def sim_section(seconds: float) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "sim", "bench", "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return "```\n" + out.stdout.strip() + "\n```"


SIM = "## Simulator speed (`python -m sim bench`)"
API = "## API writes: coord against etcd (`python -m bench.api`)"
VIP = "## VIP failover: coord against Keepalived (`python -m bench.vip`)"


def api_section(seconds: float) -> str:
    intro = [
        "Three nodes each, on loopback, fsync on for both. 256-byte values; N HTTP clients",
        "writing back to back (etcd through its JSON gateway), and coord's pipelined channel",
        "with 512 writes in flight on one WebSocket.",
        "",
    ]
    if shutil.which("etcd"):
        return "\n".join([*intro, api.run(seconds)])
    return "\n".join([*intro, "etcd is not installed here: `apt-get install -y etcd-server`."])


def vip_section(trials: int) -> str:
    intro = [
        'Each "host" is a network namespace on one bridge (`bench/netlab.py`); nothing runs',
        "in the root namespace. coord: three nodes in one namespace, two target nodes (agent",
        "in real mode, `--vip-dev`: a /32 on the host's veth and a gratuitous ARP; tgtd on the",
        "host's own address), the agents' default TTL of 1500 ms, then 1000 ms. Keepalived",
        f"{keepalived_version()}: two hosts, unicast VRRP, advert_int 1, priorities 150/100,",
        "everything else default, and a tgtd on 0.0.0.0:3260 in each. One system at a time.",
        "",
        "A trial: the VIP's holder dies at a random instant (its link goes down, then every",
        "process in its namespace is killed by PID); the outage lasts until an iSCSI login",
        "through the VIP succeeds again, from a client namespace that starts a new login",
        "every 20 ms (our own probe on `target/iscsi`, each attempt with a 1 s budget; for",
        "coord the login follows the portal's redirect to a node's tgtd). *VIP moved*: until",
        "the address is configured on the other host. The dead host then comes back (a clean",
        "reboot) and the VIP settles before the next trial; Keepalived's 150 takes it back",
        "(preemption), so there it is always the 150 that dies and the 100 that takes over.",
        "Every target namespace's addresses are read every 20 ms all along (a netlink dump,",
        "what `ip -n NS addr` does): two live hosts with the VIP in one reading is a dual",
        "holder. With fewer than 100 trials p99 is the largest value.",
        "",
        "Where the time goes. coord: the leader expires the lease a TTL after the last",
        "heartbeat it received (heartbeats every TTL/5, so TTL minus up to TTL/5 after the",
        "death), then the revoke's commit, the new holder's watch (each batch of events",
        "is followed at once by a progress note, so its map copy takes the change in",
        "without waiting), then `ip addr`, ARP and the portal. Keepalived: the backup's",
        "master-down interval, 3 x advert_int +",
        "(256 - 100)/256 s = 3.61 s after the last advert it received. A dual holder when",
        "a dead Keepalived host comes back is VRRP preemption: the returning 150 configures",
        "the VIP when its own master-down timer ends, and the 100 drops it only once it",
        "receives the 150's first advert.",
        "",
        f"Measured {datetime.date.today().isoformat()}.",
        "",
    ]
    why = vip.unavailable()
    if why is not None:
        return "\n".join([*intro, f"Not run here: {why}."])
    return "\n".join([*intro, vip.run(trials)])


def keepalived_version() -> str:
    if not shutil.which("keepalived") and not shutil.which("keepalived", path="/usr/sbin"):
        return "(not installed)"
    out = subprocess.run(["keepalived", "--version"], capture_output=True, text=True)
    words = (out.stderr or out.stdout).split()
    return words[1] if len(words) > 1 else "(unknown version)"


def header() -> list[str]:
    return [
        "# Benchmarks",
        "",
        "Re-run everything with `python -m bench` (or `just bench`); each section also has its",
        "own command. Peers are measured in the same run, one system at a time.",
        "",
        machine(),
        "",
    ]


def split_sections(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The lines before the first ``## `` heading, and each section's lines by heading."""
    head: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] = head
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("## "):
            current = sections.setdefault(line, [])
        else:
            current.append(line)
    return head, sections


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--vip-trials", type=int, default=20)
    ap.add_argument(
        "--only",
        action="append",
        choices=["sim", "api", "vip"],
        help="run only this section (repeatable); the file's other sections are kept",
    )
    args = ap.parse_args()
    builders = {
        SIM: lambda: sim_section(4 * args.seconds),
        API: lambda: api_section(args.seconds),
        VIP: lambda: vip_section(args.vip_trials),
    }
    chosen = {SIM: "sim", API: "api", VIP: "vip"}
    out = Path(args.out)
    head: list[str] = header()
    kept: dict[str, list[str]] = {}
    if args.only and out.exists():
        old_head, kept = split_sections(out.read_text())
        head = old_head or head
    parts = list(head)
    for title in [*builders, *(t for t in kept if t not in builders)]:
        if parts and parts[-1] != "":
            parts.append("")
        if args.only and chosen.get(title) not in args.only:
            if title in kept:
                parts += [title, *kept[title]]
            continue
        parts += [title, "", builders[title](), ""]
    text = "\n".join(parts).rstrip("\n") + "\n"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
