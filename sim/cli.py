"""python -m sim: list, run, explore, figures, real, bench.

``run ... --html out.html`` also writes the run's timeline picture (sim/html.py);
``explore ... --html out.html`` writes the first failing seed's.

Exit status: 0 no violation, 1 a violation, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from coord.raft import RaftNode

from .explore import swarm_scenario
from .mutants import MUTANTS
from .peers import PEER_ENGINES
from .report import timeline, verdict
from .run import RunResult, run_scenario
from .scenario import Scenario, ScenarioError, catalogue, load

ENGINES: dict[str, type[RaftNode]] = {"coord": RaftNode, **MUTANTS}


class UsageError(Exception):
    pass


def _engine(name: str) -> type[RaftNode]:
    if name not in ENGINES:
        known = ", ".join([*ENGINES, *PEER_ENGINES])
        raise UsageError(f"unknown engine {name!r} (known: {known})")
    return ENGINES[name]


def _resolve(name: str, seed: int | None, nodes: int | None) -> tuple[Scenario, int]:
    if name.startswith("explore:"):
        try:
            swarm_seed = int(name.split(":", 1)[1])
        except ValueError as e:
            raise UsageError(f"bad explore seed in {name!r}") from e
        return swarm_scenario(swarm_seed, nodes), swarm_seed if seed is None else seed
    sc = load(name)
    if nodes is not None and sc.nodes_fixed and nodes != sc.nodes:
        raise UsageError(f"scenario {sc.name} is written for exactly {sc.nodes} nodes")
    return sc, 1 if seed is None else seed


def _replay(name: str, seed: int, nodes: int | None, engine: str) -> str:
    cmd = f"python -m sim run {name}"
    if not name.startswith("explore:") or seed != int(name.split(":", 1)[1]):
        cmd += f" --seed {seed}"
    if nodes:
        cmd += f" --nodes {nodes}"
    if engine != "coord":
        cmd += f" --engine {engine}"
    return cmd


def run_one(
    name: str, seed: int | None, nodes: int | None, engine: str, trace: bool = False
) -> RunResult:
    sc, seed_ = _resolve(name, seed, nodes)
    if engine in PEER_ENGINES:  # another Raft implementation under the same simulator
        return PEER_ENGINES[engine](
            sc,
            seed_,
            nodes=None if sc.nodes_fixed else nodes,
            keep_trace=trace,
            replay=_replay(name, seed_, nodes, engine),
            drop_agents=name.startswith("explore:"),
        )
    return run_scenario(
        sc,
        seed_,
        nodes=None if sc.nodes_fixed else nodes,
        node_class=_engine(engine),
        keep_trace=trace,
        replay=_replay(name, seed_, nodes, engine),
    )


def cmd_list(args: argparse.Namespace) -> int:
    for sc in catalogue():
        first = " ".join(sc.summary.split())
        print(f"{sc.name:<28} {sc.nodes} nodes  {first[:110]}")
    print(f"{'explore:SEED':<28} swarm: faults, network and settings drawn from the seed")
    return 0


def write_picture(res: RunResult, path: str, engine: str) -> None:
    from .html import render

    try:
        Path(path).write_text(render(res, engine), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e}") from e


def cmd_run(args: argparse.Namespace) -> int:
    if not args.json:
        print(
            f"SEED={args.seed if args.seed is not None else '(default)'} scenario={args.scenario}",
            flush=True,
        )
    res = run_one(args.scenario, args.seed, args.nodes, args.engine, trace=args.trace)
    if args.json:
        print(json.dumps(res.to_json(), indent=2))
    else:
        if args.trace and res.world.trace_lines is not None:
            print("\n".join(res.world.trace_lines))
        print(timeline(res))
        print(verdict(res))
    if args.html:
        write_picture(res, args.html, args.engine)
        if not args.json:
            print(f"picture: {args.html}")
    return 0 if res.ok else 1


def cmd_explore(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    failing: list[int] = []
    first_failing: RunResult | None = None
    if not args.json:
        print(
            f"SEED={args.start}..{args.start + args.seeds - 1} explore engine={args.engine}",
            flush=True,
        )
    for seed in range(args.start, args.start + args.seeds):
        res = run_one(f"explore:{seed}", None, args.nodes, args.engine)
        runs.append(res.to_json())
        if not res.ok:
            failing.append(seed)
            if first_failing is None and args.html:
                first_failing = res
        if not args.json:
            mark = "ok  " if res.ok else "FAIL"
            kinds = ", ".join(sorted({v.kind for v in res.violations}))
            print(
                f"{mark} seed {seed:<6} nodes={res.nodes} ops ok={res.ops['ok']:<4} "
                f"info={res.ops['info']:<3} leaders={len(res.leaders):<3} {kinds}",
                flush=True,
            )
    wall = time.perf_counter() - started
    if args.json:
        print(json.dumps({"runs": runs, "failing_seeds": failing, "wall_s": wall}, indent=2))
    else:
        print(f"{len(runs)} seeds in {wall:.1f}s; {len(failing)} failing")
        for seed in failing:
            print(f"  replay: {_replay(f'explore:{seed}', seed, args.nodes, args.engine)}")
    if first_failing is not None:
        write_picture(first_failing, args.html, args.engine)
        if not args.json:
            print(f"picture of seed {first_failing.seed}: {args.html}")
    return 1 if failing else 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .figures import main as figures_main

    return figures_main(args.seeds, args.balance_seeds or args.seeds)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args.seconds)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the scenario catalogue").set_defaults(fn=cmd_list)
    r = sub.add_parser("run", help="run one scenario with one seed")
    r.add_argument("scenario", help="a name from `list`, a .toml path, or explore:SEED")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--nodes", type=int, default=None)
    r.add_argument(
        "--engine", default="coord", help="coord, pysyncobj, or a mutant: " + ", ".join(MUTANTS)
    )
    r.add_argument("--json", action="store_true")
    r.add_argument("--trace", action="store_true", help="print every traced event first")
    r.add_argument("--html", metavar="PATH", help="also write the timeline picture (one HTML file)")
    r.set_defaults(fn=cmd_run)
    e = sub.add_parser("explore", help="swarm: random fault schedules, one per seed")
    e.add_argument("--seeds", type=int, default=20)
    e.add_argument("--start", type=int, default=1)
    e.add_argument("--nodes", type=int, default=None)
    e.add_argument("--engine", default="coord")
    e.add_argument("--json", action="store_true")
    e.add_argument("--html", metavar="PATH", help="write the first failing seed's picture here")
    e.set_defaults(fn=cmd_explore)
    f = sub.add_parser("figures", help="VIP reassignment time and reconnect balance over seeds")
    f.add_argument("--seeds", type=int, default=100)
    f.add_argument(
        "--balance-seeds", type=int, default=0, help="seeds of mass-reconnect (default: --seeds)"
    )
    f.set_defaults(fn=cmd_figures)
    from .real import cli as real_cli

    rp = sub.add_parser(
        "real", help="the same checks on real coord processes, with proxies and a nemesis"
    )
    real_cli.add_arguments(rp)
    rp.set_defaults(fn=real_cli.run)
    b = sub.add_parser("bench", help="simulated seconds per wall second; seeds per minute")
    b.add_argument("--seconds", type=float, default=20.0, help="wall-clock budget per measurement")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if getattr(args, "nodes", None) is not None and not 1 <= args.nodes <= 9:
        p.error("--nodes must be between 1 and 9")
    if getattr(args, "seeds", 1) < 1:
        p.error("--seeds must be at least 1")
    try:
        return int(args.fn(args))
    except (UsageError, ScenarioError) as e:
        print(f"python -m sim: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
