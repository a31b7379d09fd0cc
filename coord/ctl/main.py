# PYTHON_ARGCOMPLETE_OK
"""coordctl: operate a coord cluster from the command line.

    coordctl status                                 leader, term, every member's state
    coordctl kv put config/a 1; coordctl kv get config/a -o json
    coordctl kv watch config/ --count 5 --timeout 30
    coordctl lock backup --ttl 10 -- ./backup.sh    run a command under a lock
    coordctl volume create db1 --size 10GiB --policy gold
    coordctl node ls; coordctl vip move 127.0.10.1 --to t2
    coordctl top                                    a live dashboard

Endpoints: --endpoints HOST:PORT,..., else $COORD_ENDPOINTS, else `endpoints` in
--config FILE / $COORD_CONFIG / ~/.config/coord/coordctl.toml, else the local
cluster's .coord/cluster.json, else 127.0.0.1:7101.

Exit status: 0 ok; 1 the operation failed (not found, precondition failed,
conflict, bad request); 2 usage; 3 unavailable (no endpoint answered, no
leader) or unknown outcome (a write that may or may not have been applied).
`lock NAME -- COMMAND` exits with the command's status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys

import argcomplete
from argcomplete.shell_integration import shellcode

from coord.client import Client, CoordError

from . import cmd_cluster, cmd_kv, cmd_map
from .cmd_base import UNAVAILABLE, USAGE, Ctx, Failed, report
from .config import UsageError, resolve, resolve_endpoints
from .output import FORMATS, Output, error

SHELLS = ("bash", "zsh", "fish")
DEFAULT_TIMEOUT = 6.0


def common_options() -> argparse.ArgumentParser:
    """Options accepted before the command and after it (``coordctl kv get k -o json``)."""
    c = argparse.ArgumentParser(add_help=False)
    g = c.add_argument_group("connection and output")
    g.add_argument(
        "--endpoints",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT,...",
        help="coord API endpoints (default: $COORD_ENDPOINTS, the config file, "
        ".coord/cluster.json, 127.0.0.1:7101)",
    )
    g.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="a TOML file with endpoints = [...] "
        "(default: $COORD_CONFIG, ~/.config/coord/coordctl.toml)",
    )
    g.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=argparse.SUPPRESS,
        help="table (default), or the API's answer as json or yaml",
    )
    g.add_argument(
        "--request-timeout",
        type=float,
        default=argparse.SUPPRESS,
        metavar="S",
        help=f"seconds per request attempt (default {DEFAULT_TIMEOUT:g})",
    )
    return c


def parser() -> argparse.ArgumentParser:
    common = common_options()
    p = argparse.ArgumentParser(
        prog="coordctl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    cmd_cluster.register(sub, common)
    cmd_kv.register(sub, common)
    cmd_map.register(sub, common)
    top = sub.add_parser("top", help="a live dashboard of the cluster", parents=[common])
    top.set_defaults(sync=cmd_top)
    sim = sub.add_parser(
        "sim",
        help="the deterministic simulator (python -m sim): coordctl sim run SCENARIO ...",
        add_help=False,
    )
    sim.add_argument("sim_args", nargs=argparse.REMAINDER, metavar="ARGS")
    sim.set_defaults(sync=cmd_sim)
    comp = sub.add_parser(
        "completion",
        help="print shell completion code",
        description="Print the completion code for a shell, e.g. "
        '`eval "$(coordctl completion bash)"` in ~/.bashrc, or '
        "`coordctl completion fish | source`.",
    )
    comp.add_argument("shell", choices=SHELLS)
    comp.set_defaults(sync=cmd_completion)
    return p


# ---- commands that need no client ---------------------------------------------------------


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(shellcode(["coordctl"], shell=args.shell))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    endpoints = resolve_endpoints(getattr(args, "endpoints", None), getattr(args, "config", None))
    try:
        from coord.ctl.top import run_top  # type: ignore[import-not-found, unused-ignore]
    except ImportError as e:
        error(f"top is not available in this installation ({e})")
        return 1
    return int(run_top(endpoints))


def cmd_sim(args: argparse.Namespace) -> int:
    from sim.cli import main as sim_main

    return sim_main(list(args.sim_args))


# ---- entry --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = parser()
    argcomplete.autocomplete(p)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sim"]:  # everything after it is the simulator's, --help included
        return cmd_sim(argparse.Namespace(sim_args=argv[1:]))
    try:
        args = _parse(p, argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else USAGE
    try:
        if getattr(args, "sync", None) is not None:
            return int(args.sync(args))
        endpoints, source = resolve(getattr(args, "endpoints", None), getattr(args, "config", None))
        out = Output(getattr(args, "output", "table"))
        timeout = getattr(args, "request_timeout", DEFAULT_TIMEOUT)
        if not timeout > 0:
            raise UsageError("--request-timeout must be a positive number of seconds")
        return asyncio.run(_run(args, endpoints, source, out, timeout))
    except UsageError as e:
        error(str(e))
        return USAGE
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except BrokenPipeError:  # `coordctl kv ls | head`
        return 0


def _parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse; for ``lock NAME [options] -- COMMAND...`` everything after ``--`` is the command."""
    if "--" in argv and "lock" in argv[: argv.index("--")]:
        cut = argv.index("--")
        with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
            args = p.parse_args(argv[:cut])
            if args.cmd == "lock":
                args.command = argv[cut + 1 :]
                return args
    args = p.parse_args(argv)
    if args.cmd == "lock" and args.command:
        p.error("lock NAME [options] -- COMMAND [ARGS...]: put the command after --")
    return args


async def _run(
    args: argparse.Namespace, endpoints: list[str], source: str, out: Output, timeout: float
) -> int:
    async with Client(endpoints, timeout=timeout) as client:
        ctx = Ctx(client, out, endpoints, source, timeout)
        try:
            return int(await args.fn(ctx, args))
        except CoordError as e:
            return report(e, ctx, args.write)
        except Failed as e:
            error(str(e))
            return e.status
        except json.JSONDecodeError:
            error(
                f"an endpoint answered something that is not JSON: is it a coord node? "
                f"(tried {', '.join(endpoints)}, from {source})"
            )
            return UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
