"""python -m sim.peers run SCENARIO --seed N [--engine pysyncobj] [--json] [--trace]

What ``python -m sim run ... --engine pysyncobj`` prints, until sim/cli.py routes peer
engines here. Exit status: 0 no violation, 1 a violation, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..report import timeline, verdict
from ..run import replay_command
from ..scenario import ScenarioError, load
from . import PEER_ENGINES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.peers", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one scenario with one seed on a peer engine")
    r.add_argument("scenario", help="a name from `python -m sim list`, or a .toml path")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--nodes", type=int, default=None)
    r.add_argument("--engine", default="pysyncobj", choices=sorted(PEER_ENGINES))
    r.add_argument("--json", action="store_true")
    r.add_argument("--trace", action="store_true", help="print every traced event first")
    args = p.parse_args(argv)
    try:
        sc = load(args.scenario)
        nodes = None if sc.nodes_fixed else args.nodes
        if not args.json:
            print(f"SEED={args.seed} scenario={args.scenario}", flush=True)
        res = PEER_ENGINES[args.engine](
            sc,
            args.seed,
            nodes=nodes,
            keep_trace=args.trace,
            replay=replay_command(args.scenario, args.seed, args.nodes, args.engine),
        )
    except ScenarioError as e:
        print(f"python -m sim.peers: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.to_json(), indent=2))
    else:
        if args.trace and res.world.trace_lines is not None:
            print("\n".join(res.world.trace_lines))
        print(timeline(res))
        print(verdict(res))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
