"""The real-process harness: a coord cluster on loopback behind fault-injecting proxies.

``python -m sim.real --duration 60s`` (see docs/harness.md and sim/real/cli.py).
"""
