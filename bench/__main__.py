"""Run every benchmark and write docs/benchmarks.md.

    python -m bench [--out docs/benchmarks.md] [--seconds 5]

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

from bench import api

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


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    parts = [
        "# Benchmarks",
        "",
        "Re-run everything with `python -m bench` (or `just bench`); each section also has its",
        "own command. Peers are measured in the same run, one system at a time.",
        "",
        machine(),
        "",
        "## Simulator speed (`python -m sim bench`)",
        "",
        sim_section(4 * args.seconds),
        "",
        "## API writes: coord against etcd (`python -m bench.api`)",
        "",
        "Three nodes each, on loopback, fsync on for both. 256-byte values; N HTTP clients",
        "writing back to back (etcd through its JSON gateway), and coord's pipelined channel",
        "with 512 writes in flight on one WebSocket.",
        "",
    ]
    if shutil.which("etcd"):
        parts.append(api.run(args.seconds))
    else:
        parts.append("etcd is not installed here: `apt-get install -y etcd-server`.")
    text = "\n".join(parts) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
