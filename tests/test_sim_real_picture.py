"""The real harness's timeline picture (sim/real/picture.py, drawn by sim/html.py), from a
fabricated harness result: no processes. Plus the partition texts it reads back, taken
from the nemesis itself against a stand-in cluster."""

from __future__ import annotations

import asyncio
import itertools
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sim.checkers.wgl import LinearizabilityResult
from sim.history import History, OpKind, Outcome
from sim.real.checks import Judgement, Violation
from sim.real.cli import main
from sim.real.nemesis import ONEWAYS, PARTITIONS, Event, Fault, Nemesis, Timeline
from sim.real.picture import blocked_links, render, replay_command
from sim.real.report import RealResult

NS = "{http://www.w3.org/2000/svg}"
VOID = {"meta", "br", "hr", "img", "input", "link"}

# What each fault did, as the nemesis plays it (texts in its own words).
PLAYED = [
    ("partition isolate-leader (stall) for 1.0s", "partition isolate-leader (stall): n1 | n2,n3"),
    ("kill node for 1.0s", "kill -9 n3"),
    ("pause leader for 1.0s", "SIGSTOP leader n2"),
    ("oneway deaf-node for 1.0s", "one-way: n3 hears nobody (can still send)"),
    ("delay all-links 50+10ms for 1.0s", "delay all links by 50ms + up to 10ms"),
    ("crash-majority for 1.0s", "kill -9 a majority: n1, n2"),
]
OUTCOMES = {"ok": 23, "fail": 5, "info": 4}


def _result(violations: list[Violation]) -> RealResult:
    events = [
        Event(0.0, "note", 0, "cluster up: n1 leads"),
        *(Event(0.01, "role", n, "", "leader" if n == 1 else "follower", 2) for n in (1, 2, 3)),
        Event(1.0, "fault", 0, PLAYED[0][1]),
        Event(1.3, "role", 2, "", "pre-candidate", 2),
        Event(1.6, "role", 2, "", "leader", 3),
        Event(1.6, "role", 3, "", "follower", 3),
        Event(2.0, "heal", 0, "heal: all links open"),
        Event(2.3, "role", 1, "", "follower", 3),
        Event(3.0, "down", 3),
        Event(3.0, "fault", 0, PLAYED[1][1]),
        Event(3.2, "role", 3, "", "candidate", 3),  # a late answer from before the kill
        Event(4.0, "up", 3),
        Event(4.0, "heal", 0, "restart n3"),
        Event(4.4, "role", 3, "", "follower", 3),
        Event(5.0, "pause", 2),
        Event(5.0, "fault", 0, PLAYED[2][1]),
        Event(5.5, "role", 1, "", "leader", 4),
        Event(5.5, "role", 3, "", "follower", 4),
        Event(6.0, "resume", 2),
        Event(6.0, "heal", 0, "SIGCONT n2"),
        Event(6.2, "role", 2, "", "leader", 3),  # polled again after SIGCONT: the same
        Event(6.5, "role", 2, "", "follower", 4),
        Event(7.0, "fault", 0, PLAYED[3][1]),
        Event(8.0, "heal", 0, "heal: all links open"),
        Event(9.0, "fault", 0, PLAYED[4][1]),
        Event(10.0, "heal", 0, "heal: all links open"),
        Event(10.5, "exit", 3, "n3 exited by itself (status 1): coord: refused"),
        Event(11.0, "down", 1),
        Event(11.0, "down", 2),
        Event(11.0, "fault", 0, PLAYED[5][1]),
        Event(12.0, "up", 1),
        Event(12.0, "up", 2),
        Event(12.0, "heal", 0, "restart n1, n2"),
        Event(12.4, "role", 1, "", "leader", 5),
        Event(12.4, "role", 2, "", "follower", 5),
        Event(14.0, "heal", 0, "final heal: all links open, restart n3"),
        Event(14.0, "up", 3),
        Event(14.5, "role", 3, "", "follower", 5),
        Event(14.6, "note", 0, "recovered: n1 leads, every node agrees"),
    ]
    played = [
        {"at_s": 1.0 + 2 * k, "fault": fault, "did": did, "until_s": 2.0 + 2 * k}
        for k, (fault, did) in enumerate(PLAYED)
    ]
    h = History()
    outcomes = [o for o, n in OUTCOMES.items() for _ in range(n)]
    t = 100_000
    for k, name in enumerate(outcomes):
        # Far apart (0.4 s), so that no two of a client's operations merge into one bar.
        client = k % 3
        op = h.invoke(client, OpKind.WRITE, "real/k0", str(1000 + k), t)
        h.complete(op, Outcome(name), t + 50_000)
        t += 400_000
    h.close()
    lin = LinearizabilityResult(not violations, ())
    j = Judgement(violations, lin, {"linearizability_keys": 1}, [])
    return RealResult(
        seed=77,
        nodes=3,
        duration_s=14.0,
        clients=3,
        faults=[],
        played=played,
        events=events,
        history=h,
        judgement=j,
        final_revision=28,
        recovery_s=0.6,
        final_leader=1,
        wall_s=16.2,
        workdir=None,
        params={"clients": 3, "kinds": ["partition", "kill"], "bind": "all"},
    )


class _Balanced(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def _svg(doc: str) -> ET.Element:
    assert doc.startswith("<!DOCTYPE html>")
    checker = _Balanced()
    checker.feed(doc)
    checker.close()
    assert checker.stack == []
    assert (
        doc.count("<svg") == 1
        and "<script" not in doc
        and "http://" not in doc.replace("http://www.w3.org/2000/svg", "")
    )
    root = ET.fromstring(doc[doc.index("<svg") : doc.index("</svg>") + len("</svg>")])
    (legend,) = [g for g in root.iter(NS + "g") if g.get("class") == "legend"]
    root.remove(legend)
    return root


def _cls(el: ET.Element) -> set[str]:
    return set(el.get("class", "").split())


def _title(el: ET.Element) -> str:
    t = el.find(NS + "title")
    return "" if t is None or t.text is None else t.text


def test_picture_of_a_real_result() -> None:
    op_named = 4  # c1's second operation, ok
    res = _result(
        [
            Violation("lost-write", f"op{op_named} c1 write real/k0 ... is nowhere"),
            Violation("node-exited", "n3 exited by itself (status 1): coord: refused"),
            Violation("liveness", "no agreed leader within 30s of the final heal"),
        ]
    )
    doc = render(res)
    assert render(res) == doc  # nothing but the result goes in
    root = _svg(doc)

    # The header: verdict, seed, duration, the command.
    assert "VIOLATION (3)" in doc and "seed <b>77</b>" in doc and "<b>14s</b>" in doc
    cmd = (
        "python -m sim real --duration 14s --seed 77 --clients 3 --bind all --faults partition,kill"
    )
    assert replay_command(res) == cmd and f"<code>{cmd}</code>" in doc

    # One lane per node, with its roles as polled.
    lanes = {g.get("data-node"): g for g in root.iter(NS + "g") if g.get("class") == "node"}
    assert sorted(lanes) == ["1", "2", "3"]

    def roles(n: str) -> list[tuple[str | None, str | None]]:
        return [
            (r.get("data-role"), r.get("data-term"))
            for r in lanes[n].iter(NS + "rect")
            if r.get("data-role")
        ]

    assert roles("1") == [("leader", "2"), ("follower", "3"), ("leader", "4"), ("leader", "5")]
    # n2: the same role polled again after SIGCONT is one span; the pause is drawn over it.
    assert roles("2") == [
        ("follower", "2"),
        ("pre-candidate", "2"),
        ("leader", "3"),
        ("follower", "4"),
        ("follower", "5"),
    ]
    # n3: the late answer while it was down is not a role; blank from restart to next poll.
    assert roles("3") == [
        ("follower", "2"),
        ("follower", "3"),
        ("follower", "3"),
        ("follower", "4"),
        ("follower", "5"),
    ]

    def over(n: str, cls: str) -> list[str]:
        return [_title(r) for r in lanes[n].iter(NS + "rect") if cls in _cls(r)]

    assert len(over("3", "down")) == 2  # killed at 3 s; exited at 10.5 s until the final heal
    assert "exited by itself" in over("3", "down")[1]
    assert len(over("1", "down")) == 1 and len(over("2", "down")) == 1
    assert len(over("2", "paused")) == 1 and over("1", "paused") == []
    # n1 isolated as leader: cut off from a majority; n2, n3 only lost their links to it.
    # n3 deaf: cut off from a majority; n1, n2 only lost their links to it.
    assert (len(over("1", "cut")), len(over("1", "cutp"))) == (1, 1)
    assert (len(over("2", "cut")), len(over("2", "cutp"))) == (0, 2)
    assert (len(over("3", "cut")), len(over("3", "cutp"))) == (1, 1)

    # The faults as spans on two rows, each naming whom it hit.
    spans = [r for r in root.iter(NS + "rect") if r.get("data-kind")]
    got = [(r.get("data-kind"), r.get("data-nodes"), sorted(_cls(r))) for r in spans]
    assert got == [
        ("partition", "n1,n2,n3", ["split"]),
        ("oneway", "n3", ["split"]),
        ("delay", "n1,n2,n3", ["slow"]),
        ("kill", "n3", ["proc"]),
        ("pause", "n2", ["proc"]),
        ("crash-majority", "n1,n2", ["proc"]),
    ]
    for r, (_, did) in zip(
        sorted(spans, key=lambda r: float(r.get("x", "0"))), PLAYED, strict=True
    ):
        assert _title(r).startswith(did)
    text = " ".join(root.itertext())
    assert "network" in text and "processes" in text

    # Operations: ok / fail / unknown, in the right counts.
    counts = {"ok": 0, "fail": 0, "info": 0}
    flagged = []
    for el in root.iter(NS + "rect"):
        if "op" in _cls(el):
            (outcome,) = _cls(el) & set(counts)
            counts[outcome] += int(el.get("data-n", "0"))
            if "flagged" in _cls(el):
                flagged.append(_title(el))
    assert counts == OUTCOMES
    assert len(flagged) == 1 and flagged[0].startswith(f"op{op_named} ")
    clients = [g.get("data-client") for g in root.iter(NS + "g") if g.get("class") == "client"]
    assert clients == ["0", "1", "2"]

    # Violations: three red lines (at op4's end, at n3's exit, at the end), labelled.
    vlines = [el for el in root.iter(NS + "line") if "viol" in _cls(el)]
    assert len(vlines) == 3
    xs = sorted(float(el.get("x1", "0")) for el in vlines)
    assert xs[0] < xs[1] < xs[2]
    labels = " ".join("".join(el.itertext()) for el in root.iter(NS + "text") if "vlbl" in _cls(el))
    assert all(k in labels for k in ("lost-write", "node-exited", "liveness"))
    assert doc.count("<li><code>VIOLATION ") == 3
    assert "<details><summary>text report</summary>" in doc


def test_picture_of_a_clean_result_has_no_violation_marks() -> None:
    root = _svg(doc := render(_result([])))
    assert '— <span class="ok-v">OK</span>' in doc
    assert not [el for el in root.iter(NS + "line") if "viol" in _cls(el)]
    assert not [el for el in root.iter(NS + "rect") if "flagged" in _cls(el)]


class _Cluster:
    """Enough of RealCluster for the nemesis to cut links (no proxies, no processes)."""

    def __init__(self, n: int, leader: int) -> None:
        self.ids = list(range(1, n + 1))
        self.peer_proxies: dict[tuple[int, int], object] = {}
        self.api_proxies: dict[tuple[int, int], object] = {}
        self._leader = leader

    async def leader(self) -> int | None:
        return self._leader


@pytest.mark.parametrize("n", [3, 5])
def test_blocked_links_read_back_what_the_nemesis_cut(n: int) -> None:
    async def go() -> None:
        cluster = _Cluster(n, leader=2)
        nem = Nemesis(cluster, Timeline(), [], 1)  # type: ignore[arg-type]
        orders = list(itertools.permutations(range(1, n + 1)))[:: 1 if n == 3 else 20]
        for order in orders:
            faults = [
                Fault(0, "partition", 1, v, m, order)
                for v in PARTITIONS
                for m in ("stall", "reset")
            ]
            faults += [Fault(0, "oneway", 1, v, "stall", order) for v in ONEWAYS]
            for f in faults:
                did = await nem._begin(f)
                cut = frozenset(p for p, flow in nem.links.flows.items() if flow.blocked)
                assert cut, did
                assert blocked_links(did, cluster.ids) == cut, did
                nem.links.heal()

    asyncio.run(go())


def test_html_into_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["--duration", "5s", "--html", str(tmp_path / "no" / "pic.html")]) == 2
