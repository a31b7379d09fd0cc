"""coord-target run: the node agent beside one tgtd (python -m target run)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from .addr import InterfaceVips, LoopbackVips, VipAddresses
from .agent import Agent, AgentConfig

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(text: str) -> int:
    """``100G``, ``1T``, ``512M`` or plain bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in "KMGT" else ""
    number = t.removesuffix(unit)
    if not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (like 100G, 1T, 512M)")
    return int(number) * UNITS[unit]


def disk(text: str) -> dict[str, object]:
    """``ID:SIZE[:TIER]``, e.g. ``d1:1T`` or ``fast:200G:ssd``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise argparse.ArgumentTypeError(f"a disk is ID:SIZE[:TIER], not {text!r}")
    d: dict[str, object] = {"id": parts[0], "size_bytes": size(parts[1])}
    if len(parts) == 3:
        d["tier"] = parts[2]
    return d


def control_port(text: str) -> int:
    if not text.isdigit() or int(text) > 32767:
        raise argparse.ArgumentTypeError(f"tgtd's control port is 0 to 32767, not {text!r}")
    return int(text)


def agent_command(
    node: str,
    endpoints: list[str],
    portal: str,
    workdir: Path,
    *,
    control_port: int = 0,
    ttl_ms: int | None = None,
    vip_dev: str = "",
) -> list[str]:
    """``coord-target run`` for a local node (the demo, tests, benchmarks): its backing
    store in WORKDIR/volumes, a 1 TiB disk ``d1``, logs and its PID file in WORKDIR."""
    cmd = [sys.executable, "-m", "target", "run", "--node", node]
    cmd += ["--endpoints", ",".join(endpoints), "--portal", portal]
    cmd += ["--backing-dir", str(workdir / "volumes"), "--disk", "d1:1T"]
    cmd += ["--log-dir", str(workdir)]
    if control_port:
        cmd += ["--tgt-control-port", str(control_port)]
    if ttl_ms is not None:
        cmd += ["--ttl-ms", str(ttl_ms)]
    if vip_dev:
        cmd += ["--vip-dev", vip_dev]
    return cmd


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coord-target", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the agent for one target node until interrupted")
    r.add_argument("--node", required=True, help="this node's id in the map")
    r.add_argument("--endpoints", required=True, help="coordinator API addresses, comma-separated")
    r.add_argument("--portal", required=True, help="IP:PORT where this node's tgtd listens")
    r.add_argument("--backing-dir", type=Path, required=True, help="the shared backing store")
    r.add_argument(
        "--tgt-control-port",
        type=control_port,
        default=0,
        help="run tgtd with this control port, 1 to 32767 (0: no tgtd)",
    )
    r.add_argument("--disk", type=disk, action="append", default=[], help="ID:SIZE[:TIER]")
    r.add_argument("--ttl-ms", type=int, default=1500, help="liveness lease TTL")
    r.add_argument("--rho", type=float, default=0.02, help="clock drift bound")
    r.add_argument("--margin-s", type=float, default=0.1, help="time to take a VIP down")
    r.add_argument("--vip-port", type=int, default=3260)
    r.add_argument(
        "--vip-dev",
        default="",
        help="real mode: add VIPs to this interface (with --vip-netns: inside that namespace); "
        "default: development mode, VIPs are loopback addresses",
    )
    r.add_argument("--vip-netns", default="")
    r.add_argument("--log-dir", type=Path, default=None)
    r.add_argument("-v", "--verbose", action="store_true")
    return p


async def run(args: argparse.Namespace) -> int:
    cfg = AgentConfig(
        node=args.node,
        endpoints=[e.strip() for e in args.endpoints.split(",") if e.strip()],
        portal=args.portal,
        backing_dir=args.backing_dir,
        tgt_control_port=args.tgt_control_port,
        disks=args.disk,
        ttl_ms=args.ttl_ms,
        rho=args.rho,
        margin_s=args.margin_s,
        vip_port=args.vip_port,
        log_dir=args.log_dir,
    )
    addrs: VipAddresses = (
        InterfaceVips(args.vip_dev, netns=args.vip_netns or None)
        if args.vip_dev
        else LoopbackVips()
    )
    agent = Agent(cfg, addrs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.start()
    except Exception as e:  # tgtd refused, no coordinator reachable, ...: say it, stop cleanly
        print(f"coord-target {cfg.node}: cannot start: {e}", file=sys.stderr, flush=True)
        await agent.stop()
        return 1
    print(f"coord-target {cfg.node}: running (portal {cfg.portal})", flush=True)
    for line in agent.missing:
        print(f"coord-target {cfg.node}: without {line}", flush=True)
    try:
        await stop.wait()
    finally:
        await agent.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s %(levelname)s {args.node} %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
