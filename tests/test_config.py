"""A node's configuration: members and dial routes, checked before anything starts."""

from __future__ import annotations

import pytest

from coord.cli import node_config, parser
from coord.server.config import ConfigError, build

MEMBERS = ["1=127.0.0.1:7001/127.0.0.1:7101", "2=127.0.0.1:7002/127.0.0.1:7102"]


def test_dial_routes_reach_a_member_elsewhere_than_its_recorded_addresses() -> None:
    cfg = build(
        id=1,
        data_dir="d",
        members=MEMBERS,
        secret=b"s" * 16,
        dial=["2=127.0.0.1:9002/127.0.0.1:9102"],
    )
    assert cfg.dial[2].peer == ("127.0.0.1", 9002) and cfg.dial[2].api == ("127.0.0.1", 9102)
    assert cfg.members[1].peer == ("127.0.0.1", 7002)  # what the cluster records stays


def test_dial_routes_are_checked() -> None:
    with pytest.raises(ConfigError, match="not this node"):
        build(id=1, data_dir="d", members=MEMBERS, secret=b"s" * 16, dial=[MEMBERS[0]])
    with pytest.raises(ConfigError, match="one --dial per member"):
        build(id=1, data_dir="d", members=MEMBERS, secret=b"s" * 16, dial=[MEMBERS[1]] * 2)
    with pytest.raises(ConfigError):
        build(id=1, data_dir="d", members=MEMBERS, secret=b"s" * 16, dial=["2=nowhere"])


def test_dial_from_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORD_SECRET", "s" * 16)
    dial = "2=127.0.0.1:9002/127.0.0.1:9102"
    args = parser().parse_args(
        ["run", "--id", "1", *[f"--member={m}" for m in MEMBERS], "--dial", dial]
    )
    assert node_config(args).dial[2].peer == ("127.0.0.1", 9002)
