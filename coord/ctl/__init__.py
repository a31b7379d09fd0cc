"""coordctl, the command line for a coord cluster (coord/ctl/main.py), and what its TUI shares.

``coord.ctl.config.resolve_endpoints`` picks the endpoints (flag, environment,
config file, the local cluster) for every tool; ``coord.ctl.output`` formats
tables, JSON and YAML, relative times and sizes.
"""
