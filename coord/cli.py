"""The ``coord`` command: run a node, bring a local cluster up or down, save a snapshot.

    coord run --id 1 --member 1=127.0.0.1:7001/127.0.0.1:8001 ... --data-dir DIR --secret-file F
    coord run --config node.toml
    coord cluster up [--nodes 3] [--dir .coord] [--base-port 7000] [--detach]
    coord cluster down [--dir .coord]
    coord snapshot save FILE [--endpoint http://127.0.0.1:8001]
    coord snapshot restore FILE --id 1 --member 1=... --member 2=... [--data-dir DIR]
    coord snapshot restore FILE --config node.toml

Exit status: 0 ok, 1 failure (including a node that stopped on an error),
2 usage, 3 storage refused (corrupt data: the message names file and offset).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from coord.storage import CorruptStorage

from .restore import RestoreError, restore
from .server.api import make_app
from .server.config import ConfigError, NodeConfig, build, load_toml
from .server.node import Node

log = logging.getLogger("coord")


# ---- coord run ---------------------------------------------------------------------------


def _secret(args: argparse.Namespace, doc: dict[str, Any]) -> bytes:
    path = args.secret_file or doc.get("secret_file")
    if path:
        try:
            return Path(path).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"secret file: {e}") from e
    inline = doc.get("secret")
    if inline is not None:
        if not isinstance(inline, str):
            raise ConfigError("secret in the config must be a string")
        return inline.encode()
    env = os.environ.get("COORD_SECRET")
    if env:
        return env.encode()
    raise ConfigError(
        "no cluster secret: use --secret-file, secret_file or secret in the config, or COORD_SECRET"
    )


def node_config(args: argparse.Namespace) -> NodeConfig:
    doc: dict[str, Any] = load_toml(Path(args.config)) if args.config else {}
    ident = args.id if args.id is not None else doc.get("id")
    if ident is None:
        raise ConfigError("which node is this? --id or id in the config")
    members = args.member or doc.get("members") or []
    if not members:
        raise ConfigError("no members: --member ID=PEER_HOST:PORT/API_HOST:PORT (repeat for each)")
    if type(ident) is not int and not (isinstance(ident, str) and ident.isdigit()):
        raise ConfigError(f"the node id is a positive integer, not {ident!r}")
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ConfigError("members is a list of 'ID=PEER_HOST:PORT/API_HOST:PORT' strings")
    tuning = {
        k: v
        for k, v in doc.items()
        if k not in ("id", "members", "data_dir", "secret_file", "secret", "join", "dial")
    }
    for k in (
        "tick_ms",
        "election_ticks",
        "snapshot_every",
        "snapshot_keep",
        "pending_session_ttl_s",
    ):
        if getattr(args, k) is not None:
            tuning[k] = getattr(args, k)
    return build(
        id=int(ident),
        data_dir=args.data_dir or doc.get("data_dir") or "data",
        members=list(members),
        secret=_secret(args, doc),
        join=bool(args.join or doc.get("join", False)),
        dial=list(args.dial or doc.get("dial") or []),
        **tuning,
    )


async def serve(cfg: NodeConfig) -> int:
    node = Node(cfg)
    await node.start()
    app = make_app(node)
    # Open streams (watches from a host that died without a FIN) must not hold a
    # stop for aiohttp's default 60 s: two seconds to finish answers, then close.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, cfg.me.api[0], cfg.me.api[1], reuse_address=True)
    await site.start()
    log.info("node %d: API on http://%s:%d, peers on %s:%d", cfg.id, *cfg.me.api, *cfg.me.peer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopped = loop.create_task(node.stopped.wait())
    asked = loop.create_task(stop.wait())
    await asyncio.wait({stopped, asked}, return_when=asyncio.FIRST_COMPLETED)
    failure = node.failure
    await runner.cleanup()
    if not node.stopped.is_set() or not failure:
        await node.stop()
    if failure:
        print(f"coord: node {cfg.id} stopped: {failure}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = node_config(args)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format=f"%(asctime)s n{cfg.id} %(name)s %(levelname)s %(message)s",
    )
    try:
        return asyncio.run(serve(cfg))
    except CorruptStorage as e:
        print(f"coord: refusing to start node {cfg.id}: corrupt storage: {e}", file=sys.stderr)
        return 3
    except OSError as e:
        print(f"coord: node {cfg.id} cannot start: {e}", file=sys.stderr)
        return 1


# ---- coord cluster up / down ---------------------------------------------------------------


def _cluster_file(d: Path) -> Path:
    return d / "cluster.json"


def _http_json(url: str, timeout: float = 1.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _ready(api: str) -> bool:
    try:
        _http_json(f"http://{api}/readyz", 0.5)
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def cmd_cluster_up(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    spec_file = _cluster_file(d)
    if spec_file.exists():
        spec = json.loads(spec_file.read_text())
        if args.nodes is not None and args.nodes != len(spec["members"]):
            print(
                f"coord: {d} holds a {len(spec['members'])}-node cluster; use another --dir",
                file=sys.stderr,
            )
            return 2
    else:
        n = args.nodes or 3
        base = args.base_port
        members = [f"{i}=127.0.0.1:{base + i}/127.0.0.1:{base + 100 + i}" for i in range(1, n + 1)]
        spec = {"members": members}
        spec_file.write_text(json.dumps(spec, indent=2))
        secret = d / "secret"
        secret.write_text(secrets.token_hex(32))
        secret.chmod(0o600)
    members = spec["members"]
    pids: dict[str, int] = {}
    apis = []
    for m in members:
        ident = m.split("=", 1)[0]
        apis.append(m.split("/", 1)[1])
        cmd = [
            sys.executable,
            "-m",
            "coord",
            "run",
            "--id",
            ident,
            "--data-dir",
            str(d / "data"),
            "--secret-file",
            str(d / "secret"),
        ]
        for mm in members:
            cmd += ["--member", mm]
        logf = open(d / f"node-{ident}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        pids[ident] = proc.pid
    (d / "pids.json").write_text(json.dumps(pids))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(_ready(a) for a in apis):
        time.sleep(0.1)
    if not all(_ready(a) for a in apis):
        print(f"coord: the cluster did not become ready; see {d}/node-*.log", file=sys.stderr)
        _stop(pids)
        return 1
    info = _http_json(f"http://{apis[0]}/v1/cluster")
    leader = info.get("leader")
    print(f"coord: {len(members)}-node cluster up on loopback (data in {d}/data)")
    for m, a in zip(members, apis, strict=True):
        ident = m.split("=", 1)[0]
        mark = "  <- leader" if str(leader) == ident else ""
        print(f"  node {ident}: http://{a}  pid {pids[ident]}{mark}")
    first = f"http://{apis[0]}"
    if args.targets:
        from target import demo

        try:
            pids.update(demo.start_targets(args, d, apis))
        finally:
            (d / "pids.json").write_text(json.dumps(pids))
    print("try:")
    print(f'  curl -s -X PUT {first}/v1/kv/hello -d \'{{"value": "world"}}\'')
    print(f"  curl -s {first}/v1/kv/hello")
    print(f"  curl -s {first}/v1/cluster")
    # coordctl finds a cluster in ./.coord by itself; elsewhere it needs the endpoints.
    where = "" if Path(args.dir) == Path(".coord") else f" --endpoints {','.join(apis)}"
    print(f"  coordctl{where} status; coordctl{where} top")
    if args.targets:
        print(f"  curl -s {first}/v1/map; curl -s {first}/v1/vips; curl -s {first}/v1/sessions")
        demo.print_iscsi_hints(args)
    if args.detach:
        print(f"stop it with: python -m coord cluster down --dir {d}")
        return 0
    print("Ctrl-C stops the cluster.")
    # `kill PID` (a service manager, a script) stops it as Ctrl-C does: with everything
    # it started, not just itself.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while all(_alive(p) for p in pids.values()):
            time.sleep(0.5)
        print("coord: a node exited; stopping the others", file=sys.stderr)
        return_code = 1
    except KeyboardInterrupt:
        return_code = 0
    _stop(pids)
    _reap_targets(d)
    (d / "pids.json").unlink(missing_ok=True)
    return return_code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True  # not our child (detached run): it exists


def _stop(pids: dict[str, int]) -> None:
    """Stop by PID: SIGTERM, then SIGKILL whatever is left after a few seconds."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    # Agents stop their tgtd on the way out: give them time (under load, more than a second).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.05)
    for pid in pids.values():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _reap_targets(d: Path) -> None:
    if any(d.glob("t*.pids")):
        from target.demo import reap_tgtds

        for pid in reap_tgtds(d):
            print(f"coord: killed tgtd {pid}, left behind by its agent", file=sys.stderr)


def cmd_cluster_down(args: argparse.Namespace) -> int:
    f = Path(args.dir) / "pids.json"
    if not f.exists():
        print(f"coord: no running cluster recorded in {args.dir}", file=sys.stderr)
        return 1
    _stop(json.loads(f.read_text()))
    _reap_targets(Path(args.dir))
    f.unlink()
    print("coord: cluster stopped")
    return 0


# ---- coord snapshot ------------------------------------------------------------------------


def cmd_snapshot_save(args: argparse.Namespace) -> int:
    try:
        with urllib.request.urlopen(f"{args.endpoint}/v1/snapshot", timeout=30) as r:
            data = r.read()
            revision = r.headers.get("X-Coord-Revision")
    except (urllib.error.URLError, OSError) as e:
        print(f"coord: cannot fetch a snapshot from {args.endpoint}: {e}", file=sys.stderr)
        return 1
    tmp = Path(args.file + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, args.file)
    print(f"coord: saved the store at revision {revision} to {args.file} ({len(data)} bytes)")
    return 0


def restore_config(args: argparse.Namespace) -> NodeConfig:
    """Which node, which members, which data directory: read as `coord run` reads them."""
    doc: dict[str, Any] = load_toml(Path(args.config)) if args.config else {}
    ident = args.id if args.id is not None else doc.get("id")
    if type(ident) is not int:
        raise ConfigError("which node is this? --id or id (an integer) in the config")
    members = args.member or doc.get("members") or []
    if not members:
        raise ConfigError("no members: --member ID=PEER_HOST:PORT/API_HOST:PORT (repeat for each)")
    # A restore writes no secret; build() wants one only to check it, and checks the
    # rest (member syntax, unique ids, this node listed) exactly as for `coord run`.
    return build(
        id=ident,
        data_dir=args.data_dir or doc.get("data_dir") or "data",
        members=list(members),
        secret=b"-" * 16,
    )


def cmd_snapshot_restore(args: argparse.Namespace) -> int:
    cfg = restore_config(args)
    try:
        got = restore(Path(args.file), cfg.data_dir, cfg.id, cfg.members)
    except RestoreError as e:
        print(f"coord: {e}", file=sys.stderr)
        return 1
    print(
        f"coord: restored revision {got.revision} ({got.keys} keys) from {args.file} "
        f"for node {cfg.id} of a new {len(cfg.members)}-member cluster into {got.directory}"
    )
    return 0


# ---- entry -----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coord", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one node")
    r.add_argument("--config", help="a TOML file (flags override it)")
    r.add_argument("--id", type=int)
    r.add_argument(
        "--member", action="append", help="ID=PEER_HOST:PORT/API_HOST:PORT, once per member"
    )
    r.add_argument("--data-dir")
    r.add_argument("--secret-file")
    r.add_argument("--join", action="store_true", help="an empty node joining an existing cluster")
    r.add_argument(
        "--dial",
        action="append",
        help="ID=PEER_HOST:PORT/API_HOST:PORT: reach member ID there instead (a proxy, a NAT)",
    )
    r.add_argument("--tick-ms", type=int)
    r.add_argument("--election-ticks", type=int)
    r.add_argument("--snapshot-every", type=int)
    r.add_argument("--snapshot-keep", type=int)
    r.add_argument(
        "--pending-session-ttl-s",
        type=float,
        help="seconds an assigned iSCSI login may stay unconfirmed by its node (default 10)",
    )
    r.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    r.set_defaults(fn=cmd_run)
    c = sub.add_parser("cluster", help="a local cluster on loopback")
    csub = c.add_subparsers(dest="action", required=True)
    up = csub.add_parser("up", help="start (or restart) a local cluster")
    up.add_argument("--nodes", type=int)
    up.add_argument("--dir", default=".coord")
    up.add_argument("--base-port", type=int, default=7000)
    up.add_argument("--detach", action="store_true", help="start it and return")
    up.add_argument(
        "--targets",
        type=int,
        default=3,
        help="target nodes (agent + tgtd) to start beside the cluster (0: none)",
    )
    up.add_argument("--vip", default="127.0.10.1", help="the portal VIP (a loopback address)")
    up.add_argument(
        "--target-subnet",
        default="127.0.0",
        help="target node N's tgtd listens on SUBNET.(20+N):3260",
    )
    up.set_defaults(fn=cmd_cluster_up)
    down = csub.add_parser("down", help="stop a detached local cluster")
    down.add_argument("--dir", default=".coord")
    down.set_defaults(fn=cmd_cluster_down)
    s = sub.add_parser("snapshot", help="snapshots of the store")
    ssub = s.add_subparsers(dest="action", required=True)
    save = ssub.add_parser("save", help="save the store's current snapshot to a file")
    save.add_argument("file")
    save.add_argument("--endpoint", default="http://127.0.0.1:7101")
    save.set_defaults(fn=cmd_snapshot_save)
    rest = ssub.add_parser(
        "restore", help="make a node's data directory for a new cluster from a saved file"
    )
    rest.add_argument("file")
    rest.add_argument("--config", help="a TOML file as for `coord run` (flags override it)")
    rest.add_argument("--id", type=int)
    rest.add_argument(
        "--member", action="append", help="ID=PEER_HOST:PORT/API_HOST:PORT, once per new member"
    )
    rest.add_argument("--data-dir", help="as for `coord run` (the node's data goes in node-ID)")
    rest.set_defaults(fn=cmd_snapshot_restore)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "nodes", None) is not None and not 1 <= args.nodes <= 9:
        parser().error("--nodes must be between 1 and 9")
    try:
        return int(args.fn(args))
    except ConfigError as e:
        print(f"coord: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
