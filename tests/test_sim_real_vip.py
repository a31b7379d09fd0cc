"""The real harness with target agents (``--agents N``) and the VIP single-ownership check.

Fast: the agents' log parsing and the interval checker on fabricated lines, the agent
lane of the schedule, the command line's refusals. Real: one 20 s run with two agents
(kill -9, isolation, and the coordinators' own faults) that must end clean with a
hand-over, and one run of the deliberately broken variant (``--break vip-linger``:
agents that keep serving 2 s past their safe window) that must be caught.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest

from sim.real.agents import (
    AGENT_KINDS,
    OVERLAP_TOLERANCE_MS,
    LogEvent,
    build_intervals,
    judge_vips,
    parse_log,
    parse_stamp,
    report_lines,
)
from sim.real.cli import main
from sim.real.harness import RealParams, run_real
from sim.real.nemesis import KINDS, schedule
from sim.real.picture import render, replay_command
from sim.real.report import full_report

T0 = datetime(2026, 12, 2, 1, 0, 0).timestamp()  # local time, as logging's asctime


def stamp(t: float) -> str:
    """logging's default asctime for T0 + t (millisecond resolution)."""
    ms = round(t * 1000)
    dt = datetime.fromtimestamp(T0 + ms // 1000)
    return dt.strftime("%Y-%m-%d %H:%M:%S") + f",{ms % 1000:03d}"


def line(t: float, agent: str, msg: str, level: str = "INFO") -> str:
    return f"{stamp(t)} {level} {agent} coord.target: {agent}: {msg}"


def ev(t: float, agent: str, kind: str, vip: str = "127.0.77.1", epoch: int = 1) -> LogEvent:
    return LogEvent(T0 + t, agent, kind, vip, epoch, "[Errno 98] address already in use")


# ---- parsing ------------------------------------------------------------------------


def test_parse_stamp_has_milliseconds() -> None:
    assert parse_stamp(stamp(1.234)) == pytest.approx(T0 + 1.234, abs=1e-6)
    assert parse_stamp(stamp(61.007)) - parse_stamp(stamp(61.0)) == pytest.approx(0.007, abs=1e-6)


def test_parse_log_reads_the_vip_lines_only() -> None:
    text = "\n".join(
        [
            line(0.0, "a1", "registered with lease 7 at revision 12"),
            "coord-target a1: running (portal 127.0.0.41:3260)",
            "coord-target a1: without tgtd: not asked to run one; volumes are not exported",
            line(0.5, "a1", "serving VIP 127.0.77.1 (epoch 14)"),
            line(0.6, "a1", "heartbeat: unavailable"),
            line(2.25, "a1", "stopped serving VIP 127.0.77.1"),
            line(2.3, "a1", "released VIP 127.0.77.1 (epoch 14)"),
            line(
                3.0,
                "a1",
                "VIP 127.0.77.2: cannot listen: [Errno 98] error while attempting to bind "
                "on address ('127.0.77.2', 40001): address already in use",
                "ERROR",
            ),
            "Traceback (most recent call last): serving VIP 127.0.77.9 (epoch 1)",  # no stamp
        ]
    )
    got = parse_log(text, "a1")
    assert [(e.kind, e.vip, e.epoch) for e in got] == [
        ("serve", "127.0.77.1", 14),
        ("stop", "127.0.77.1", 0),
        ("released", "127.0.77.1", 14),
        ("cannot", "127.0.77.2", 0),
    ]
    assert got[0].t == pytest.approx(T0 + 0.5) and got[1].t == pytest.approx(T0 + 2.25)
    assert "address already in use" in got[3].text and got[3].agent == "a1"


def test_agent_log_format_has_milliseconds() -> None:
    """The agent's logging format is logging's asctime: ',mmm' milliseconds."""
    import logging

    rec = logging.LogRecord("coord.target", logging.INFO, "", 0, "a1: x", None, None)
    fmt = logging.Formatter("%(asctime)s %(levelname)s a1 %(name)s: %(message)s")
    out = fmt.format(rec)
    assert parse_log(out.replace("a1: x", "a1: stopped serving VIP 127.0.77.1"), "a1")
    assert abs(parse_stamp(out[:23]) - rec.created) < 0.001


# ---- intervals and the check ------------------------------------------------------


def test_intervals_end_at_stop_at_death_and_at_the_end() -> None:
    events = [
        ev(0.0, "a1", "serve", "127.0.77.1"),
        ev(0.0, "a1", "serve", "127.0.77.2"),
        ev(1.0, "a1", "stop", "127.0.77.2"),
        ev(1.5, "a2", "serve", "127.0.77.2"),
        ev(5.0, "a1", "serve", "127.0.77.2"),  # a new a1, after the death
    ]
    ivs = build_intervals(events, {"a1": [T0 + 3.0]}, T0 + 9.0)
    one = [(iv.agent, iv.start - T0, iv.end - T0, iv.why_end) for iv in ivs["127.0.77.1"]]
    two = [(iv.agent, iv.start - T0, iv.end - T0, iv.why_end) for iv in ivs["127.0.77.2"]]
    assert one == [("a1", 0.0, pytest.approx(3.0), "killed")]
    assert two == [
        ("a1", 0.0, pytest.approx(1.0), "stopped"),
        ("a2", pytest.approx(1.5), pytest.approx(9.0), "end of run"),
        ("a1", pytest.approx(5.0), pytest.approx(9.0), "end of run"),
    ]


def test_clean_hand_overs_are_no_violation() -> None:
    events = [
        ev(0.0, "a1", "serve"),
        ev(2.0, "a1", "stop"),  # isolated: its window closed
        ev(2.4, "a2", "serve"),  # the leader counted a full TTL, a2 took it
        ev(6.0, "a2", "stop"),  # a planned move (drain): released first
        ev(6.012, "a1", "serve"),
    ]
    j = judge_vips(events, {}, T0 + 9.0, t0=T0)
    assert j.violations == []
    assert [(h.src, h.dst, h.gap_ms) for h in j.handovers] == [
        ("a1", "a2", pytest.approx(400.0)),
        ("a2", "a1", pytest.approx(12.0)),
    ]
    text = "\n".join(report_lines(j, T0))
    assert "hand-over a1 -> a2 at 2.40s, gap 400 ms" in text
    assert "a2 [2.40s-6.00s]" in text


def test_a_kill_ends_the_interval_so_the_next_holder_is_clean() -> None:
    events = [ev(0.0, "a1", "serve"), ev(1.6, "a2", "serve")]
    j = judge_vips(events, {"a1": [T0 + 0.2]}, T0 + 3.0, t0=T0)
    assert j.violations == [] and j.handovers[0].gap_ms == pytest.approx(1400.0)
    # Without the harness's record of the kill, the same log is an overlap.
    j = judge_vips(events, {}, T0 + 3.0, t0=T0)
    assert [k for k, _ in j.violations] == ["vip-overlap"]


def test_overlap_beyond_the_tolerance_is_a_violation() -> None:
    within = OVERLAP_TOLERANCE_MS / 2000  # seconds
    events = [ev(0.0, "a1", "serve"), ev(1.0, "a2", "serve"), ev(1.0 + within, "a1", "stop")]
    assert judge_vips(events, {}, T0 + 2.0, t0=T0).violations == []
    events = [ev(0.0, "a1", "serve"), ev(1.0, "a2", "serve"), ev(1.5, "a1", "stop")]
    j = judge_vips(events, {}, T0 + 2.0, t0=T0)
    (kind, detail), *_ = j.violations
    assert kind == "vip-overlap" and "for 500 ms" in detail and "a1" in detail
    assert j.handovers[0].gap_ms == pytest.approx(-500.0)


def test_cannot_listen_is_a_violation_naming_the_holder() -> None:
    """What --break vip-linger leaves in the logs: the isolated a1 keeps serving past its
    window; a2, given the VIP by the leader, cannot bind it until a1 lets go."""
    events = [
        ev(0.0, "a1", "serve"),
        ev(3.6, "a2", "cannot"),
        ev(3.9, "a2", "cannot"),
        ev(4.2, "a2", "cannot"),
        ev(5.0, "a1", "stop"),
        ev(5.1, "a2", "serve"),
        ev(8.0, "a1", "cannot", "127.0.77.2"),  # another episode, another VIP
    ]
    j = judge_vips(events, {}, T0 + 9.0, t0=T0)
    assert j.cannot == 4
    kinds = [k for k, _ in j.violations]
    assert kinds == ["vip-cannot-listen", "vip-cannot-listen"]
    first = j.violations[0][1]
    assert "a2 could not listen on VIP 127.0.77.1 at 3.600s (3 times until 4.200s)" in first
    assert "held by a1 (serving since 0.000s)" in first
    assert [(h.src, h.dst) for h in j.handovers] == [("a1", "a2")]


# ---- the schedule and the command line -------------------------------------------


def test_agent_lane_from_the_seed() -> None:
    all_kinds = KINDS + AGENT_KINDS
    for seed in range(20):
        plain = schedule(seed, 3, 20.0, KINDS)
        assert schedule(seed, 3, 20.0, all_kinds) == plain  # no agents: no agent faults
        got = schedule(seed, 3, 20.0, all_kinds, agents=2)
        assert [f for f in got if f.lane != "agent"] == plain  # the nodes' faults unchanged
        lane = [f for f in got if f.lane == "agent"]
        assert {"agent-kill", "agent-isolate"} <= {f.kind for f in lane[:2]}
        assert all(f.hold_s >= 3.0 for f in lane if f.kind == "agent-isolate")
        assert all(a.at_s + a.hold_s < b.at_s for a, b in itertools.pairwise(lane))
        assert all(sorted(f.order) == [1, 2] for f in lane)
        assert got == schedule(seed, 3, 20.0, all_kinds, agents=2)
    lone = schedule(3, 3, 10.0, ("agent-isolate", "agent-kill"), agents=2, isolate_first=True)
    assert lone[0].kind == "agent-isolate" and all(f.lane == "agent" for f in lone)


def test_cli_refuses_agent_faults_without_agents(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--duration", "10s", "--faults", "kill,agent-kill"]) == 2
    assert main(["--duration", "10s", "--break", "vip-linger"]) == 2
    assert main(["--duration", "10s", "--agents", "1", "--break", "vip-linger"]) == 2
    assert main(["--duration", "10s", "--agents", "9"]) == 2
    err = capsys.readouterr().err
    assert "unknown fault kinds ['agent-kill']" in err and "vip-linger needs" in err


# ---- real runs ------------------------------------------------------------------------


def test_real_run_with_agents(tmp_path: Path) -> None:
    """20 s with two agents: kill -9 and isolation of agents (and the nodes' own faults
    alongside); no VIP violation, at least one hand-over, every VIP settled at the end."""
    began = time.monotonic()
    p = RealParams(nodes=3, duration_s=20.0, seed=5, agents=2, kinds=KINDS + AGENT_KINDS)
    p.keep = tmp_path
    res = asyncio.run(run_real(p, lambda _: None))
    text = full_report(res)
    did = " ".join(x["did"] for x in res.played)
    assert "kill -9 agent" in did and "isolate agent" in did, text
    assert res.ok, text
    v = res.vip
    assert v["handovers"] and v["cannot_listen"] == 0, text
    assert v["settled_after_heal_s"] is not None, text
    assert all(v["intervals"][a] for a in v["vips"]), text
    assert "checked: VIP single ownership (2 agents" in text and "hand-over" in text
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["vip"]["handovers"][0]["gap_ms"] is not None
    html = render(res)
    svg = html[html.index("<svg") : html.index("</svg>") + 6]
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    vips = [g for g in root.iter(f"{ns}g") if g.get("class") == "vip"]
    assert sorted(g.get("data-address") for g in vips) == ["127.0.77.1", "127.0.77.2"]
    assert ">agents<" in svg
    assert "--agents 2" in replay_command(res) and "--faults" not in replay_command(res)
    assert time.monotonic() - began < 40


def test_real_run_catches_vip_linger(tmp_path: Path) -> None:
    """Agents started with --margin-s=-2 keep serving 2 s past their safe window: the
    isolated one still holds its VIP when the leader hands it to the other agent, whose
    bind the kernel refuses. The check must say so."""
    p = RealParams(
        nodes=3,
        duration_s=9.0,
        seed=5,
        agents=2,
        kinds=("agent-isolate",),
        broken="vip-linger",
        keep=tmp_path,
    )
    res = asyncio.run(run_real(p, lambda _: None))
    text = full_report(res)
    assert res.played and "isolate agent" in res.played[0]["did"], text
    assert not res.ok, text
    kinds = {v.kind for v in res.judgement.violations}
    assert "vip-cannot-listen" in kinds, text
    assert "deliberately broken: vip-linger" in text
