"""python -m sim.real: the partition harness against real coord processes.

    python -m sim.real --duration 60s                 # a short run, 3 nodes, a random seed
    python -m sim.real --duration 30m --nodes 5 --seed 7 --keep runs/ --json out.json
    python -m sim.real --duration 20s --break amnesia  # a deliberate bug the checkers must catch
    python -m sim real --duration 20s --html out.html  # also the timeline picture
    python -m sim real --duration 20s --agents 2       # target agents: VIP single ownership

Exit status: 0 no violation, 1 a violation, 2 usage error (130 after Ctrl-C, 143 after
SIGTERM: both stop every process the run started before exiting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path

from . import picture
from .agents import AGENT_KINDS
from .harness import RealParams, run_real
from .nemesis import KINDS
from .report import full_report


class UsageError(Exception):
    pass


def parse_seconds(text: str, lo: float = 5.0, hi: float = 24 * 3600.0) -> float:
    """'20s', '1.5m', '30m', '1h', '90' (seconds) -> seconds."""
    t = text.strip().lower()
    scale = 1.0
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], mult
            break
    try:
        v = float(t) * scale
    except ValueError as e:
        raise UsageError(f"bad duration {text!r} (e.g. 20s, 30m)") from e
    if not lo <= v <= hi:
        raise UsageError(f"{text!r} is out of range ({lo:g}s to {hi:g}s)")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", default="60s", help="how long the load and the nemesis run (60s, 30m)"
    )
    parser.add_argument("--nodes", type=int, default=3, choices=[3, 5])
    parser.add_argument("--seed", type=int, help="draws the fault schedule (default: random)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (1-32)")
    parser.add_argument("--keys", type=int, default=3, help="keys the clients share (1-20)")
    parser.add_argument("--watchers", type=int, default=2, help="watchers of the keys (0-8)")
    parser.add_argument(
        "--bind",
        choices=["mixed", "all"],
        default="mixed",
        help="mixed: even-numbered clients talk to one node only (a client on that node's "
        "host), the others to every node; all: every client to every node",
    )
    parser.add_argument(
        "--attempts", type=int, default=8, help="coord.client attempts per operation (1-20)"
    )
    parser.add_argument(
        "--attempt-timeout",
        default="2s",
        help="coord.client's timeout per attempt (default 2s; the library's own is 6s)",
    )
    parser.add_argument(
        "--faults",
        default=None,
        help=f"fault kinds to draw from, comma-separated (default: all of {','.join(KINDS)}, "
        f"and with --agents also {','.join(AGENT_KINDS)})",
    )
    parser.add_argument(
        "--agents",
        type=int,
        default=0,
        help="target agents (python -m target run, no tgtd) behind proxies of their own, "
        "serving VIPs on loopback; the VIP single-ownership check (0-5, default 0)",
    )
    parser.add_argument(
        "--vips", type=int, default=2, help="VIPs (127.0.77.1, ...) with --agents (1-4)"
    )
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="play network faults and process faults (kill, pause) at the same time, "
        "in two lanes drawn from the seed",
    )
    parser.add_argument(
        "--break",
        dest="broken",
        choices=["amnesia", "vip-linger"],
        help="a deliberate bug the checkers must catch: amnesia (wipe a majority's data at "
        "a crash), vip-linger (with --agents: agents keep serving 2 s past their lease's "
        "safe window, --margin-s=-2)",
    )
    parser.add_argument("--keep", help="keep logs and data under this directory")
    parser.add_argument("--json", help="also write the report as JSON to this file")
    parser.add_argument(
        "--html",
        help="also write the timeline picture (one self-contained HTML file) to this file",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the verdict")


def params_from(args: argparse.Namespace) -> RealParams:
    duration = parse_seconds(str(args.duration))  # 5 s to 24 h
    agents = int(getattr(args, "agents", 0) or 0)
    if not 0 <= agents <= 5:
        raise UsageError("--agents must be between 0 and 5")
    vips = int(getattr(args, "vips", 2) or 2)
    if not 1 <= vips <= 4:
        raise UsageError("--vips must be between 1 and 4")
    known = KINDS + AGENT_KINDS if agents else KINDS
    faults = args.faults if args.faults is not None else ",".join(known)
    kinds = tuple(k.strip() for k in str(faults).split(",") if k.strip())
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds:
        raise UsageError(f"unknown fault kinds {unknown} (known: {', '.join(known)})")
    if args.broken == "vip-linger" and (agents < 2 or "agent-isolate" not in kinds):
        raise UsageError("--break vip-linger needs --agents 2 or more and agent-isolate")
    if not 1 <= args.clients <= 32:
        raise UsageError("--clients must be between 1 and 32")
    if not 1 <= args.keys <= 20:
        raise UsageError("--keys must be between 1 and 20")
    if not 0 <= args.watchers <= 8:
        raise UsageError("--watchers must be between 0 and 8")
    if not 1 <= args.attempts <= 20:
        raise UsageError("--attempts must be between 1 and 20")
    attempt_timeout = parse_seconds(str(args.attempt_timeout), lo=0.1, hi=60.0)
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    return RealParams(
        nodes=args.nodes,
        duration_s=duration,
        seed=seed,
        clients=args.clients,
        keys=args.keys,
        watchers=args.watchers,
        bind=args.bind,
        attempts=args.attempts,
        attempt_timeout_s=attempt_timeout,
        kinds=kinds,
        overlap=bool(args.overlap),
        broken=args.broken or "",
        agents=agents,
        vips=vips,
        keep=Path(args.keep) if args.keep else None,
    )


def run(args: argparse.Namespace) -> int:
    try:
        p = params_from(args)
        html = getattr(args, "html", None)
        if html and not Path(html).resolve().parent.is_dir():
            raise UsageError(f"--html {html}: no such directory")
    except UsageError as e:
        print(f"sim real: {e}", file=sys.stderr)
        return 2
    quiet = bool(getattr(args, "quiet", False))

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    try:
        res = asyncio.run(run_real(p, say))
    except KeyboardInterrupt:
        print("sim real: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("sim real: terminated; every process it started is stopped", file=sys.stderr)
        return 143
    if args.json:  # first: a closed stdout must not lose it
        Path(args.json).write_text(json.dumps(res.to_json(), indent=1))
    if html:
        try:
            Path(html).write_text(picture.render(res), encoding="utf-8")
        except OSError as e:
            print(f"sim real: could not write the picture: {e}", file=sys.stderr)
    print(full_report(res) if not quiet else full_report(res).split("\n\n")[0])
    return 0 if res.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.real",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
