"""coordctl against a real 3-node cluster on loopback (started once for the module).

Most tests call ``coord.ctl.main.main(argv)`` in-process and read what it
printed (capsys); one runs the installed ``coordctl`` console script. Every
test uses names of its own (keys, volumes, nodes, VIPs), so they do not see
each other's records.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from coord.client import Client, CoordError, UnknownOutcome
from coord.clustermap.model import GIB
from coord.ctl import config, output
from coord.ctl.cmd_base import describe, report
from coord.ctl.config import UsageError, resolve_endpoints
from coord.ctl.main import main

from .procs import Cluster, free_base, running

T = TypeVar("T")
_ids = itertools.count(1)
COORDCTL = Path(sys.executable).parent / "coordctl"


def uid(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}x{next(_ids)}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("ctl")) as c:
        yield c


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No endpoints from the environment, the user's config or a .coord in the cwd."""
    for var in ("COORD_ENDPOINTS", "COORD_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def dead_endpoint() -> str:
    return f"127.0.0.1:{free_base(1) + 1}"  # a free port: nothing listens there


class Ctl:
    """Run coordctl in-process against the cluster: (exit status, stdout, stderr)."""

    def __init__(self, cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
        self.endpoints = ",".join(cluster.endpoints())
        self.capsys = capsys
        self.cluster = cluster

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = main(["--endpoints", self.endpoints, *argv])
        out, err = self.capsys.readouterr()
        return rc, out, err

    def json(self, *argv: str) -> Any:
        rc, out, err = self(*argv, "-o", "json")
        assert rc == 0, err
        return json.loads(out)

    def yaml(self, *argv: str) -> Any:
        rc, out, err = self(*argv, "-o", "yaml")
        assert rc == 0, err
        return yaml.safe_load(out)

    def api(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        """Set the stage through the Python client (what agents do, say)."""

        async def go() -> T:
            async with Client(self.cluster.endpoints(), timeout=3.0) as c:
                return await fn(c)

        return asyncio.run(go())


@pytest.fixture
def ctl(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> Ctl:
    return Ctl(cluster, capsys)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("coordctl: "), err
    return lines[0]


# ---- endpoint resolution and formatting (no cluster) ---------------------------------------


def test_endpoints_come_from_flag_env_config_local_cluster_or_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_endpoints(None) == ["127.0.0.1:7101"]
    coord = tmp_path / ".coord"
    coord.mkdir()
    members = [f"{i}=127.0.0.1:700{i}/127.0.0.1:710{i}" for i in (1, 2)]
    (coord / "cluster.json").write_text(json.dumps({"members": members}))
    assert resolve_endpoints(None) == ["127.0.0.1:7101", "127.0.0.1:7102"]
    home_cfg = tmp_path / "home" / ".config" / "coord" / "coordctl.toml"
    home_cfg.parent.mkdir(parents=True)
    home_cfg.write_text('endpoints = ["127.0.9.1:7101", "http://127.0.9.2:7101/"]\n')
    assert resolve_endpoints(None) == ["127.0.9.1:7101", "127.0.9.2:7101"]
    other = tmp_path / "other.toml"
    other.write_text('endpoints = "127.0.9.3:1,127.0.9.3:1, [::1]:2"\n')
    monkeypatch.setenv("COORD_CONFIG", str(other))
    assert resolve_endpoints(None) == ["127.0.9.3:1", "[::1]:2"]
    monkeypatch.setenv("COORD_ENDPOINTS", "127.0.9.4:5")
    assert resolve_endpoints(None) == ["127.0.9.4:5"]
    assert resolve_endpoints(None, str(home_cfg)) == ["127.0.9.4:5"]  # env before the file
    monkeypatch.delenv("COORD_ENDPOINTS")
    assert resolve_endpoints(None, str(home_cfg)) == ["127.0.9.1:7101", "127.0.9.2:7101"]
    assert resolve_endpoints("h:1, h:2") == ["h:1", "h:2"]


@pytest.mark.parametrize(
    ("arg", "config_text", "message"),
    [
        ("nohost", None, "bad endpoint 'nohost'"),
        ("h:99999", None, "bad endpoint"),
        ("https://h:1", None, "bad endpoint"),
        ("::1:7", None, "bad endpoint"),
        (",", None, "no endpoint given"),
        (None, "endpoints = [", "not valid TOML"),
        (None, "endpoints = [1, 2]", "must be a list"),
        (None, "other = 1", "has no 'endpoints'"),
    ],
)
def test_bad_endpoints_are_usage_errors(
    tmp_path: Path, arg: str | None, config_text: str | None, message: str
) -> None:
    cfg = None
    if config_text is not None:
        cfg = tmp_path / "c.toml"
        cfg.write_text(config_text)
    with pytest.raises(UsageError, match=message):
        resolve_endpoints(arg, None if cfg is None else str(cfg))


def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        config.resolve_endpoints(None, str(tmp_path / "nope.toml"))


def test_sizes_and_relative_times() -> None:
    assert output.size(10 * GIB) == "10 GiB"
    assert output.size(1536 << 20) == "1.5 GiB"
    assert output.size(512) == "512 B"
    assert output.parse_size("10GiB") == 10 * GIB
    assert output.parse_size("10G") == 10 * GIB
    assert output.parse_size("1.5 TiB") == 3 << 39
    assert output.parse_size("2GB") == 2_000_000_000
    assert output.parse_size("4096") == 4096
    for bad in ("ten", "10XB", "1.5", "iB", "-1G"):
        with pytest.raises(UsageError):
            output.parse_size(bad)
    now = 1_000_000.0
    assert output.ago(now * 1000 - 12_000, now) == "12 s ago"
    assert output.ago(now * 1000 + 3_000, now) == "in 3 s"
    assert output.ago(now * 1000 - 7_200_000, now) == "2 h ago"
    assert output.ago(None, now) == "-"
    assert output.within(4.2) == "in 4.2 s"
    assert output.within(-1) == "expired"


def test_error_lines_say_what_happened(capsys: pytest.CaptureFixture[str]) -> None:
    hinted = CoordError(
        "not_leader", "this node is not the leader", 421, {"leader": {"id": 2, "api": "h:2"}}
    )
    assert describe(hinted) == "not leader: this node is not the leader (leader: node 2 at h:2)"
    rc = report(UnknownOutcome("unknown_outcome", "gave up after 8 attempts"), None, "session")
    err = capsys.readouterr().err
    assert rc == 3
    assert "unknown outcome: gave up" in err
    assert "may or may not have been applied" in err and "same sequence number" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["-o", "xml", "status"]) == 2
    assert main(["volume", "create", "v", "--size", "10XB", "--policy", "p"]) == 2
    assert "bad size '10XB'" in capsys.readouterr().err
    assert main(["--endpoints", "nohost", "kv", "get", "a"]) == 2
    assert one_line(capsys.readouterr().err).endswith("(want HOST:PORT, e.g. 127.0.0.1:7101)")
    assert main(["lock", "x", "echo"]) == 2  # the command goes after --
    assert main(["--help"]) == 0
    assert "Exit status" in capsys.readouterr().out


def test_completion_prints_shell_code(capsys: pytest.CaptureFixture[str]) -> None:
    for shell in ("bash", "zsh", "fish"):
        assert main(["completion", shell]) == 0
        assert "coordctl" in capsys.readouterr().out
    assert main(["completion", "tcsh"]) == 2


def test_top_hands_the_endpoints_to_run_top(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def run_top(endpoints: list[str]) -> int:
        seen.append(endpoints)
        return 0

    fake = types.ModuleType("coord.ctl.top")
    fake.run_top = run_top  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "coord.ctl.top", fake)
    assert main(["top", "--endpoints", "h:1,h:2"]) == 0
    assert seen == [["h:1", "h:2"]]


def test_sim_passes_its_arguments_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "list"]) == 0
    assert "explore:SEED" in capsys.readouterr().out
    assert main(["sim", "run", "no-such-scenario"]) == 2


# ---- nothing answers -------------------------------------------------------------------------


def test_no_endpoint_answering_is_exit_3_naming_the_endpoints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = dead_endpoint()
    assert main(["--endpoints", dead, "kv", "get", "a"]) == 3
    line = one_line(capsys.readouterr().err)
    assert "unavailable: no endpoint could serve it" in line
    assert dead in line and "--endpoints" in line
    assert main(["--endpoints", dead, "status"]) == 3
    line = one_line(capsys.readouterr().err)
    assert "no endpoint answered" in line and dead in line


# ---- cluster ---------------------------------------------------------------------------------


def test_status_shows_every_member_and_a_dead_endpoint_as_down(ctl: Ctl) -> None:
    rc, out, err = ctl("status")
    assert rc == 0, err
    assert "leader: node" in out and "term" in out
    assert out.count("follower") == 2 and "leader" in out
    doc = ctl.json("status")
    assert doc["leader"] in (1, 2, 3) and doc["term"] >= 1
    assert sorted(m["id"] for m in doc["members"]) == [1, 2, 3]
    assert all(m["health"] == "ok" and m["lag"] is not None for m in doc["members"])
    assert len(ctl.yaml("status")["members"]) == 3
    dead = dead_endpoint()
    ctl.capsys.readouterr()
    assert main(["--endpoints", f"{ctl.cluster.apis[1]},{dead}", "status", "-o", "json"]) == 0
    rows = json.loads(ctl.capsys.readouterr().out)["members"]
    assert len(rows) == 4  # the three members (found through node 1) and the dead endpoint
    down = [r for r in rows if r["api"] == dead]
    assert down and down[0]["role"] == "down" and down[0]["health"] == "down"


def test_members_add_a_learner_refuse_to_promote_it_and_remove_it(ctl: Ctl) -> None:
    rc, out, _ = ctl("member", "list")
    assert rc == 0 and "leader" in out and "voter" in out
    base = free_base(1)
    rc, out, err = ctl("member", "add", "9", f"127.0.0.1:{base + 1}", f"127.0.0.1:{base + 101}")
    assert rc == 0, err
    assert "added as a learner" in out
    members = {m["id"]: m for m in ctl.json("member", "list")["members"]}
    assert members[9]["role"] == "learner"
    rc, _, err = ctl("member", "promote", "9")  # it never answered: nothing to promote yet
    assert rc == 1 and "precondition failed" in one_line(err)
    rc, _, err = ctl("member", "add", "9", "127.0.0.1:1", "127.0.0.1:2")
    assert rc == 1 and "exists" in one_line(err)
    rc, out, err = ctl("member", "remove", "9")
    assert rc == 0 and "removed" in out, err
    assert 9 not in {m["id"] for m in ctl.json("member", "list")["members"]}
    for action in ("promote", "remove"):
        rc, _, err = ctl("member", action, "9")
        assert rc == 1 and "not found: member 9" in one_line(err)
    rc, _, err = ctl("member", "add", "9", "nohost", "127.0.0.1:2")
    assert rc == 2 and "bad endpoint" in one_line(err)


def test_leader_transfer_hands_over_to_another_voter(ctl: Ctl) -> None:
    before = ctl.json("member", "list")["leader"]
    rc, out, err = ctl("leader", "transfer")
    assert rc == 0, err
    assert f"from node {before}" in out
    assert ctl.cluster.wait_ready() != before
    rc, _, err = ctl("leader", "transfer", "--to", "42")
    assert rc == 1 and "not found: member 42" in one_line(err)


def test_snapshot_save_writes_the_store(ctl: Ctl, tmp_path: Path) -> None:
    key = uid("snap/")
    assert ctl("kv", "put", key, "v")[0] == 0
    target = tmp_path / "backup.snap"
    doc = ctl.json("snapshot", "save", str(target))
    assert doc["file"] == str(target) and doc["revision"] >= 1
    assert target.stat().st_size == doc["bytes"] > 0
    rc, out, _ = ctl("snapshot", "save", str(tmp_path / "b2.snap"))
    assert rc == 0 and "saved the store at revision" in out
    rc, _, err = ctl("snapshot", "save", str(tmp_path / "no" / "dir" / "x.snap"))
    assert rc == 1 and "cannot write" in one_line(err)


# ---- keys, transactions, leases, locks -------------------------------------------------------


def test_kv_put_get_ls_del(ctl: Ctl, monkeypatch: pytest.MonkeyPatch) -> None:
    p = uid("kv/")
    rc, out, err = ctl("kv", "put", f"{p}/a", "1")
    assert rc == 0 and "written at revision" in out, err
    doc = ctl.json("kv", "get", f"{p}/a")
    assert doc["value"] == "1" and doc["version"] == 1
    assert ctl.yaml("kv", "get", f"{p}/a")["mod_revision"] == doc["mod_revision"]
    assert ctl("kv", "get", f"{p}/a", "--value-only")[1] == "1\n"
    rc, out, _ = ctl("kv", "get", f"{p}/a")
    assert rc == 0 and "value:" in out and "mod_revision:" in out
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin"))
    assert ctl("kv", "put", f"{p}/b")[0] == 0
    assert ctl.json("kv", "get", f"{p}/b")["value"] == "from stdin"
    rc, _, err = ctl("kv", "put", f"{p}/a", "2", "--prev-revision", "1")
    assert rc == 1 and "precondition failed" in one_line(err)
    assert ctl("kv", "put", f"{p}/a", "2", "--prev-revision", str(doc["mod_revision"]))[0] == 0
    listed = ctl.json("kv", "ls", p)
    assert [kv["key"] for kv in listed["items"]] == [f"{p}/a", f"{p}/b"]
    rc, out, _ = ctl("kv", "ls", p, "--keys-only")
    assert out.split() == [f"{p}/a", f"{p}/b"]
    rc, out, _ = ctl("kv", "ls", p)
    assert rc == 0 and "2 key(s)" in out and "from stdin" in out
    assert ctl.json("kv", "del", f"{p}/a")["deleted"] == 1
    rc, _, err = ctl("kv", "get", f"{p}/a")
    assert rc == 1 and one_line(err) == f"coordctl: not found: key '{p}/a'"
    assert ctl.json("kv", "del", p, "--prefix")["deleted"] == 1
    assert ctl.json("kv", "ls", p)["items"] == []


def test_kv_watch_is_bounded_by_count_and_timeout(ctl: Ctl) -> None:
    p = uid("watch/")
    first = ctl.json("kv", "put", f"{p}/1", "a")["revision"]
    ctl("kv", "put", f"{p}/2", "b")
    ctl("kv", "del", f"{p}/1")
    rc, out, err = ctl("kv", "watch", p, "--rev", str(first), "--count", "3", "-o", "json")
    assert rc == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["type"], e["key"]) for e in events] == [
        ("put", f"{p}/1"),
        ("put", f"{p}/2"),
        ("delete", f"{p}/1"),
    ]
    rc, out, _ = ctl("kv", "watch", p, "--rev", str(first), "--count", "2")
    assert rc == 0 and f"PUT {p}/2 = b" in out
    rc, out, err = ctl("kv", "watch", uid("quiet/"), "--count", "1", "--timeout", "0.3")
    assert rc == 1 and "timeout: 0 of 1" in one_line(err)
    assert ctl("kv", "watch", uid("quiet/"), "--timeout", "0.3")[0] == 0
    assert ctl("kv", "watch", p, "--count", "0")[0] == 2


def test_txn_from_a_file_and_from_stdin(
    ctl: Ctl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = uid("txn/")
    body = {
        "compare": [{"key": key, "target": "version", "op": "==", "value": 0}],
        "success": [{"op": "put", "key": key, "value": "first"}],
        "failure": [{"op": "get", "key": key}],
    }
    f = tmp_path / "txn.json"
    f.write_text(json.dumps(body))
    rc, out, err = ctl("txn", str(f))
    assert rc == 0 and out.startswith("SUCCESS"), err
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(body)))
    doc = ctl.json("txn")
    assert doc["succeeded"] is False and doc["results"][0]["kv"]["value"] == "first"
    monkeypatch.setattr(sys, "stdin", io.StringIO("{not json"))
    rc, _, err = ctl("txn")
    assert rc == 2 and "stdin is not JSON" in one_line(err)
    f.write_text(json.dumps({"success": [{"op": "frob"}]}))
    rc, _, err = ctl("txn", str(f))
    assert rc == 1 and "bad request" in one_line(err)
    rc, _, err = ctl("txn", str(tmp_path / "missing.json"))
    assert rc == 2 and "cannot read" in one_line(err)


def test_leases_grant_keepalive_list_revoke(ctl: Ctl) -> None:
    lease = ctl.json("lease", "grant", "30")["id"]
    rc, out, _ = ctl("lease", "ls")
    assert rc == 0 and str(lease) in out and "in " in out
    assert lease in [x["id"] for x in ctl.yaml("lease", "ls")["leases"]]
    rc, out, _ = ctl("lease", "keepalive", str(lease))
    assert rc == 0 and f"lease {lease} renewed" in out
    key = uid("leased/")
    assert ctl("kv", "put", key, "v", "--lease", str(lease))[0] == 0
    rc, out, _ = ctl("lease", "revoke", str(lease))
    assert rc == 0 and "revoked" in out
    assert ctl("kv", "get", key)[0] == 1  # the lease took its key along
    rc, _, err = ctl("lease", "keepalive", str(lease))
    assert rc == 1 and "lease not found" in one_line(err)


def test_lock_runs_a_command_with_the_fencing_token(ctl: Ctl, tmp_path: Path) -> None:
    name = uid("lock")
    seen = tmp_path / "seen"
    script = (
        "import os, sys; from pathlib import Path; "
        f"Path({str(seen)!r}).write_text(os.environ['COORD_LOCK_TOKEN']); sys.exit(5)"
    )
    rc, out, err = ctl("lock", name, "--ttl", "5", "--", sys.executable, "-c", script)
    assert rc == 5, err  # the command's own status
    token = out.split("fencing token ")[1].split()[0]
    assert seen.read_text() == token
    assert ctl.json("kv", "ls", f"coord/locks/{name}/")["items"] == []  # released
    rc, out, _ = ctl("lock", name, "-o", "json", "--", sys.executable, "-c", "pass")
    assert rc == 0 and json.loads(out.splitlines()[0])["revision"] > int(token)
    rc, _, err = ctl("lock", name, "--", "/no/such/command")
    assert rc == 127 and "cannot run" in one_line(err)


# ---- the cluster map -------------------------------------------------------------------------


def _nodes(ctl: Ctl, n: int) -> list[tuple[str, int]]:
    async def go(c: Client) -> list[tuple[str, int]]:
        out = []
        for _ in range(n):
            name, k = uid("node"), next(_ids)
            disks = [{"id": "d1", "size_bytes": 10 * GIB}]
            got = await c.register_node(name, f"127.0.2.1:{20000 + k}", disks, 60_000)
            out.append((name, int(got["lease"])))
        return out

    return ctl.api(go)


def test_nodes_list_show_drain_undrain(ctl: Ctl) -> None:
    ((name, _),) = _nodes(ctl, 1)
    rc, out, _ = ctl("node", "ls")
    assert rc == 0 and name in out and "0 B / 10 GiB (1)" in out
    listed = {n["id"]: n for n in ctl.json("node", "ls")["items"]}
    assert listed[name]["live"] is True
    shown = ctl.yaml("node", "show", name)
    assert shown["id"] == name and shown["disks"][0]["size_bytes"] == 10 * GIB
    rc, out, _ = ctl("node", "show", name)
    assert rc == 0 and "10 GiB" in out and "since:" in out
    rc, out, _ = ctl("node", "drain", name)
    assert rc == 0 and f"node {name} drained" in out
    assert ctl.json("node", "show", name)["drained"] is True
    assert "was already drained" in ctl("node", "drain", name)[1]
    assert f"node {name} undrained" in ctl("node", "undrain", name)[1]
    ctl("node", "drain", name)  # leave it out of other tests' placements
    for argv in (("node", "show", "no-such-node"), ("node", "drain", "no-such-node")):
        rc, _, err = ctl(*argv)
        assert rc == 1 and "not found" in one_line(err) and "no-such-node" in err


def test_policies_volumes_replicas_and_sessions(ctl: Ctl) -> None:
    nodes = _nodes(ctl, 3)
    pol, vol = uid("pol"), uid("vol")
    rc, out, err = ctl("policy", "create", pol, "--replicas", "2", "--arbiter")
    assert rc == 0 and f"policy {pol} created" in out, err
    rc, _, err = ctl("policy", "create", pol, "--replicas", "2")
    assert rc == 1 and "already exists" in one_line(err)
    assert (
        "replaced" in ctl("policy", "create", pol, "--replicas", "2", "--arbiter", "--replace")[1]
    )
    assert pol in ctl("policy", "ls")[1]
    assert ctl.json("policy", "show", pol)["arbiter"] is True
    assert ctl("policy", "show", uid("nopol"))[0] == 1

    created = ctl.json("volume", "create", vol, "--size", "1GiB", "--policy", pol)
    assert {r["node"] for r in created["replicas"]} <= {n for n, _ in nodes}
    rc, _, err = ctl("volume", "create", vol, "--size", "1GiB", "--policy", pol)
    assert rc == 1 and "exists" in one_line(err)
    rc, _, err = ctl("volume", "create", uid("v"), "--size", "1GiB", "--policy", uid("nopol"))
    assert rc == 1 and "not found" in one_line(err)
    rc, out, _ = ctl("volume", "ls")
    assert rc == 0 and vol in out and "1 GiB" in out and "3/3 healthy" in out
    assert vol in [v["name"] for v in ctl.yaml("volume", "ls", "--state", "ok")["items"]]
    rc, out, _ = ctl("volume", "show", vol)
    assert rc == 0 and "arbiter" in out and "created:" in out
    assert "now 2 GiB" in ctl("volume", "resize", vol, "--size", "2G")[1]
    rc, _, err = ctl("volume", "resize", vol, "--size", "1G")
    assert rc == 1 and "bad request" in one_line(err)

    rc, out, err = ctl("replica", "accuse", vol, "2", "--by", "test")
    assert rc == 0 and "accused" in out, err
    assert ctl.json("volume", "show", vol)["state"] == "degraded"
    assert "healing" in ctl("replica", "heal", vol, "2", "--result", "started")[1]
    assert "healthy" in ctl("replica", "heal", vol, "2", "--result", "ok")[1]
    rc, _, err = ctl("replica", "accuse", vol, "99")
    assert rc == 1 and "not found" in one_line(err)

    serving = created["replicas"][0]["node"]
    lease = dict(nodes)[serving]
    initiator = "iqn.2026-12.org.example:ctl"
    ctl.api(lambda c: c.report_sessions(serving, lease, [(vol, initiator)]))
    rc, out, _ = ctl("session", "ls", "--volume", vol)
    assert rc == 0 and initiator in out and "active" in out
    assert ctl.json("session", "ls", "--node", serving)["items"][0]["initiator"] == initiator
    rc, _, err = ctl("volume", "delete", vol)
    assert rc == 1 and "in use" in one_line(err)
    rc, _, err = ctl("policy", "delete", pol)
    assert rc == 1 and "in use" in one_line(err)
    assert "deleted" in ctl("volume", "delete", vol, "--force")[1]
    rc, _, err = ctl("volume", "show", vol)
    assert rc == 1 and one_line(err) == f"coordctl: not found: volume '{vol}'"
    assert ctl("policy", "delete", pol)[0] == 0
    assert ctl("map")[0] == 0 and "volume_states" in ctl.json("map")
    for name, _ in nodes:
        ctl("node", "drain", name)


def test_vips_create_move_delete(ctl: Ctl) -> None:
    (a, _), (b, _) = _nodes(ctl, 2)
    for other in ctl.json("node", "ls")["items"]:  # only these two may take the VIP
        if other["id"] not in (a, b) and not other["drained"]:
            ctl("node", "drain", other["id"])
    addr = f"127.0.{100 + next(_ids) % 100}.{next(_ids) % 250 + 1}"
    rc, out, err = ctl("vip", "create", addr)
    assert rc == 0 and f"VIP {addr} created" in out, err
    rc, _, err = ctl("vip", "create", addr)
    assert rc == 1 and "exists" in one_line(err)
    vip = {v["address"]: v for v in ctl.json("vip", "ls")["items"]}[addr]
    assert vip["owner"] in (a, b)
    other = b if vip["owner"] == a else a
    rc, out, err = ctl("vip", "move", addr, "--to", other)
    assert rc == 0 and other in out, err
    rc, out, _ = ctl("vip", "ls")
    assert rc == 0 and addr in out
    rc, _, err = ctl("vip", "move", addr, "--to", "no-such-node")
    assert rc == 1 and "not found" in one_line(err)
    rc, _, err = ctl("vip", "create", "not-an-ip")
    assert rc == 1 and "bad request" in one_line(err)
    rc, out, _ = ctl("vip", "delete", addr)
    assert rc == 0 and f"VIP {addr}" in out
    for name in (a, b):
        ctl("node", "drain", name)


# ---- the console script ----------------------------------------------------------------------


def test_the_console_script_and_its_exit_status(cluster: Cluster, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_")}
    env["COORD_ENDPOINTS"] = ",".join(cluster.endpoints())
    run = subprocess.run(
        [str(COORDCTL), "kv", "get", uid("absent/")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert run.returncode == 1 and run.stdout == ""
    assert one_line(run.stderr).startswith("coordctl: not found: key")
    run = subprocess.run(
        [str(COORDCTL), "status", "-o", "yaml"], capture_output=True, text=True, env=env, timeout=30
    )
    assert run.returncode == 0, run.stderr
    assert len(yaml.safe_load(run.stdout)["members"]) == 3


def test_lock_without_a_command_holds_until_interrupted(cluster: Cluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_")}
    env["COORD_ENDPOINTS"] = ",".join(cluster.endpoints())
    name = uid("held")
    p = subprocess.Popen(
        [str(COORDCTL), "lock", name, "--ttl", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], 20)
        assert ready
        line = p.stdout.readline()
        assert f"lock '{name}' held: fencing token" in line
        p.send_signal(signal.SIGINT)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)

    async def left(c: Client) -> list[Any]:
        items: list[Any] = (await c.range(f"coord/locks/{name}/"))["items"]
        return items

    async def go() -> list[Any]:
        async with Client(cluster.endpoints()) as c:
            return await left(c)

    assert asyncio.run(go()) == []


def test_status_shows_a_stopped_member_as_down(ctl: Ctl) -> None:
    """Last in the module: it stops a follower (and starts it again)."""
    leader = ctl.cluster.wait_ready()
    follower = next(i for i in sorted(ctl.cluster.procs) if i != leader)
    ctl.cluster.kill9(follower)
    try:
        rc, out, err = ctl("status")
        assert rc == 0, err
        assert "down" in out
        rows = {r["id"]: r for r in ctl.json("status")["members"]}
        assert rows[follower]["role"] == "down" and rows[follower]["health"] == "down"
        assert rows[leader]["role"] == "leader" and rows[leader]["health"] == "ok"
    finally:
        ctl.cluster.start(follower)
