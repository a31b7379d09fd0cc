"""The API, consensus, failover and scale benchmarks, each at a tiny size: they run to the end
and produce well-formed results. No timing is asserted: these are not timed tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import api, consensus, failover, scale
from bench.procutil import free_port_block


def test_consensus_coord_and_pysyncobj() -> None:
    r = consensus.run_system("coord", 1.0, [8])
    assert [p.inflight for p in r.phases] == [8]
    assert r.phases[0].commits > 0
    results = [r]
    if consensus.have_pysyncobj():
        o = consensus.run_system("pysyncobj", 1.0, [64], pso_conf=consensus.TUNED)
        o.label = "tuned"
        assert o.phases[0].commits > 0
        results.append(o)
    table = consensus.render(results)
    assert "| coord (fsync) | defaults | 8 |" in table
    if len(results) == 2:
        assert "| PySyncObj 0.3.17 (no fsync) | tuned" in table
        assert "Best of each" in table


def test_failover_coord_one_trial() -> None:
    cfg = failover.configs()["coord"]
    got = failover.run_config(cfg, 1)
    assert len(got.outages) + got.failed == 1
    assert all(x > 0 for x in got.outages)
    table = failover.render([got])
    assert table.count("\n| coord |") == 1


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
def test_failover_etcd_one_trial() -> None:
    got = failover.run_config(failover.configs()["etcd-coord"], 1)
    assert len(got.outages) + got.failed == 1
    assert "| etcd | coord's timeouts |" in failover.render([got])


def test_scale_tiny() -> None:
    r = scale.run_scale(1000, 100, tail=100)
    assert r.snap_bytes > 0
    assert r.map_volumes_seen == 100
    assert r.daemon_ready_s > 0 and r.daemon_rss > 0
    assert r.catch_up_s > 0  # a new member caught up through an InstallSnapshot
    table = scale.render([r])
    assert "| 1,000 | 100 | 100 |" in table


def test_api_coord_http_and_channel(tmp_path: Path) -> None:
    procs, url = api.start_coord(tmp_path, free_port_block([1, 2, 3, 101, 102, 103]))
    try:
        http = api.measured(procs, api.load_http("coord", url, 4, 1.0, 100))
        chan = api.measured(procs, api.load_channel(url, 64, 1.0, 500))
    finally:
        procs.stop_all()
    assert http.writes >= 100 and chan.writes >= 500  # writers already running finish theirs
    assert http.server_cores > 0 and chan.client_cores > 0
    table = api.render([http, chan])
    assert "| coord | 4 | " in table and "| coord channel | 64 in flight |" in table
