"""A node's configuration: members and dial routes, checked before anything starts."""

from __future__ import annotations

from pathlib import Path

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


def test_a_toml_config_file_gives_everything_and_flags_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COORD_SECRET", raising=False)
    path = tmp_path / "node.toml"
    path.write_text(
        'id = 2\ndata_dir = "d2"\nsecret = "a-secret-of-16-bytes-or-more"\n'
        f"members = {MEMBERS!r}\n".replace("'", '"')
        + "tick_ms = 20\nrequest_timeout_s = 2.5\n"
    )
    cfg = node_config(parser().parse_args(["run", "--config", str(path)]))
    assert (cfg.id, str(cfg.data_dir), cfg.secret) == (2, "d2", b"a-secret-of-16-bytes-or-more")
    assert cfg.tick_ms == 20 and cfg.request_timeout_s == 2.5 and len(cfg.members) == 2
    flags = parser().parse_args(["run", "--config", str(path), "--tick-ms", "30"])
    assert node_config(flags).tick_ms == 30


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('tick_ms = "fast"', "tick_ms must be an integer"),
        ("tick_ms = true", "tick_ms must be an integer"),
        ("tick_ms = 1.5", "tick_ms must be an integer"),
        ("request_timeout_s = -1", "must not be negative"),
        ("colour = 3", "unknown setting 'colour'"),
        ("secret = 7", "secret in the config must be a string"),
        ('members = "1=a"', "members is a list"),
        ('id = "two"', "the node id is a positive integer"),
    ],
)
def test_a_bad_config_file_is_a_clear_error(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "node.toml"
    base = {
        "id": "id = 1",
        "secret": 'secret = "a-secret-of-16-bytes-or-more"',
        "members": f"members = {MEMBERS!r}".replace("'", '"'),
    }
    base[line.split(" ", 1)[0]] = line
    path.write_text("\n".join(base.values()) + "\n")
    with pytest.raises(ConfigError, match=message):
        node_config(parser().parse_args(["run", "--config", str(path)]))
