# coord: common tasks. `just --list` shows them.

py := ".venv/bin/python"

# Create the virtual environment with development tools.
setup:
    python3 -m venv .venv
    .venv/bin/pip install -q -e '.[dev]'

# The main job: a local 3-node cluster on loopback (Ctrl-C stops it).
demo:
    .venv/bin/coord cluster up

# The simulator's flagship scenario, with its timeline.
sim-demo seed="1":
    {{py}} -m sim run leader-minority-split --seed {{seed}}

# The whole test suite (what CI runs).
test *args:
    {{py}} -m pytest -q {{args}}

# Lint and type-check.
lint:
    {{py}} -m ruff check coord sim target tests
    {{py}} -m ruff format --check coord sim target tests
    {{py}} -m mypy coord sim target

# Run one scenario, or explore random fault schedules: `just sim run figure-8 --seed 3`.
sim *args:
    {{py}} -m sim {{args}}

# Simulator speed: simulated seconds per wall second, seeds per minute.
sim-bench seconds="20":
    {{py}} -m sim bench --seconds {{seconds}}

# All benchmarks, written to docs/benchmarks.md (peers measured in the same run).
bench *args:
    {{py}} -m bench {{args}}
