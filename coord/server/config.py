"""A node's configuration: from flags or a TOML file, checked before anything starts.

Members are written ``ID=PEER_HOST:PORT/API_HOST:PORT``, for example
``1=127.0.0.1:7001/127.0.0.1:8001``. Addresses default to loopback: listening
anywhere else must be asked for explicitly.

``dial`` (``--dial ID=PEER/API``, same syntax) tells this node to reach member ID
at other addresses than the ones the cluster records for it: a member behind a
proxy or a NAT. The recorded addresses (what ``/v1/cluster`` shows and clients
are told) stay as they are; only this node's own connections change.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Member:
    id: int
    peer: tuple[str, int]
    api: tuple[str, int]

    def spec(self) -> str:
        return f"{self.id}={self.peer[0]}:{self.peer[1]}/{self.api[0]}:{self.api[1]}"

    def context(self) -> dict[str, Any]:
        return {"peer": f"{self.peer[0]}:{self.peer[1]}", "api": f"{self.api[0]}:{self.api[1]}"}


@dataclass
class NodeConfig:
    id: int
    data_dir: Path
    members: list[Member]  # the founding members (a joining node lists the cluster it joins)
    secret: bytes
    join: bool = False  # an empty node added later: no bootstrap, learns the configuration
    tick_ms: int = 50
    election_ticks: int = 6
    heartbeat_ticks: int = 1
    snapshot_every: int = 10_000  # entries between snapshots
    snapshot_keep: int = 5_000  # entries kept after a snapshot for slow followers
    max_body_bytes: int = 2 << 20
    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20
    request_timeout_s: float = 5.0
    # An assigned login its node's agent has not reported within this long is
    # forgotten, so it stops counting against that node (coord/clustermap/controller.py).
    pending_session_ttl_s: float = 10.0
    dial: dict[int, Member] = field(default_factory=dict)  # where this node reaches a member
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def me(self) -> Member:
        for m in self.members:
            if m.id == self.id:
                return m
        raise ConfigError(f"node {self.id} is not among the members")


# The settings a config file (or a flag) may tune, and their types.
TUNABLE: dict[str, type] = {
    f.name: int if f.type == "int" else float
    for f in fields(NodeConfig)
    if f.type in ("int", "float")
    if f.name != "id"
}


def parse_addr(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: want HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError as e:
        if host != "localhost":
            raise ConfigError(f"{what}: {host!r} is not an IP address") from e
    return host, int(port)


def parse_member(text: str) -> Member:
    ident, sep, rest = text.partition("=")
    peer, sep2, api = rest.partition("/")
    if not sep or not sep2 or not ident.isdigit() or int(ident) < 1:
        raise ConfigError(f"member: want ID=PEER_HOST:PORT/API_HOST:PORT, got {text!r}")
    return Member(
        int(ident), parse_addr(peer, f"member {ident} peer"), parse_addr(api, f"member {ident} api")
    )


def load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e


def build(
    *,
    id: int,
    data_dir: str | Path,
    members: list[str],
    secret: bytes,
    join: bool = False,
    dial: list[str] | None = None,
    **tuning: Any,
) -> NodeConfig:
    ms = [parse_member(m) for m in members]
    routes = [parse_member(d) for d in dial or []]
    if len({d.id for d in routes}) != len(routes):
        raise ConfigError("one --dial per member id")
    if id in {d.id for d in routes}:
        raise ConfigError("--dial names other members, not this node")
    ids = [m.id for m in ms]
    if len(set(ids)) != len(ids):
        raise ConfigError("member ids must be unique")
    if len(secret) < 16:
        raise ConfigError("the cluster secret must be at least 16 bytes")
    cfg = NodeConfig(
        id=id,
        data_dir=Path(data_dir),
        members=sorted(ms, key=lambda m: m.id),
        secret=secret,
        join=join,
        dial={d.id: d for d in routes},
    )
    for k, v in tuning.items():
        if v is None:
            continue
        kind = TUNABLE.get(k)
        if kind is None:
            known = ", ".join(sorted(TUNABLE))
            raise ConfigError(f"unknown setting {k!r} (settings: {known})")
        # TOML and flags give ints and floats; a string or a bool here is a mistake.
        if type(v) not in (int, float) or (kind is int and type(v) is not int):
            raise ConfigError(f"{k} must be {'an integer' if kind is int else 'a number'}")
        if v < 0:
            raise ConfigError(f"{k} must not be negative")
        setattr(cfg, k, kind(v))
    cfg.me  # noqa: B018 - raises if this node is not listed
    if not 0 < cfg.heartbeat_ticks < cfg.election_ticks:
        raise ConfigError("need 0 < heartbeat_ticks < election_ticks")
    if not 0 < cfg.pending_session_ttl_s <= 86_400:
        raise ConfigError("pending_session_ttl_s is seconds, more than 0 and at most a day")
    return cfg
