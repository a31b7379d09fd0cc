"""The timeline picture (sim/html.py): one self-contained, well-formed, deterministic HTML
file that shows the nodes' roles and terms, the partitions, the client operations by
outcome, the VIPs and the violations of a run."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sim.cli import main
from sim.html import render
from sim.mutants import MUTANTS
from sim.run import RunResult, run_scenario
from sim.scenario import load

NS = "{http://www.w3.org/2000/svg}"
VOID = {"meta", "br", "hr", "img", "input", "link"}


class _Balanced(HTMLParser):
    """Every element that is opened is closed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def _parse(doc: str) -> ET.Element:
    assert doc.startswith("<!DOCTYPE html>")
    checker = _Balanced()
    checker.feed(doc)
    checker.close()
    assert checker.stack == []
    assert checker.tags.count("svg") == 1
    svg = doc[doc.index("<svg") : doc.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)
    (legend,) = [g for g in root.iter(NS + "g") if g.get("class") == "legend"]
    assert "leader" in "".join(legend.itertext())
    root.remove(legend)  # its swatches are not marks
    return root


def _cls(el: ET.Element) -> set[str]:
    return set(el.get("class", "").split())


def _all(root: ET.Element, tag: str, cls: str | None = None) -> list[ET.Element]:
    return [el for el in root.iter(NS + tag) if cls is None or cls in _cls(el)]


def _title(el: ET.Element) -> str:
    t = el.find(NS + "title")
    return "" if t is None or t.text is None else t.text


def _op_counts(root: ET.Element) -> dict[str, int]:
    counts = {"ok": 0, "fail": 0, "info": 0}
    for el in _all(root, "rect", "op"):
        (outcome,) = _cls(el) & {"ok", "fail", "info", "pending"}
        if outcome != "pending":
            counts[outcome] += int(el.get("data-n", "0"))
    return counts


@pytest.fixture(scope="module")
def split() -> RunResult:
    return run_scenario(load("leader-minority-split"), 1)


@pytest.fixture(scope="module")
def split_doc(split: RunResult) -> str:
    return render(split)


def test_cli_writes_the_same_bytes_for_the_same_seed(
    tmp_path: Path, split_doc: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "split.html"
    code = main(["run", "leader-minority-split", "--seed", "1", "--html", str(out)])
    assert code == 0
    assert f"picture: {out}" in capsys.readouterr().out
    # Another run of the same seed, in this process: byte for byte the same page.
    assert out.read_bytes() == split_doc.encode()
    other = render(run_scenario(load("leader-minority-split"), 2))
    assert other != split_doc


def test_page_is_well_formed_and_self_contained(split: RunResult, split_doc: str) -> None:
    _parse(split_doc)
    assert "<script" not in split_doc and "<link" not in split_doc and "@import" not in split_doc
    assert " src=" not in split_doc
    assert re.findall(r"https?://[^\"' ]*", split_doc) == ["http://www.w3.org/2000/svg"]
    assert re.findall(r"url\((?!#)", split_doc) == []
    assert len(split_doc) < 1_000_000
    # The header: scenario, seed, engine, verdict, replay command.
    head = split_doc[: split_doc.index("<svg")]
    assert "leader-minority-split" in head and "seed <b>1</b>" in head
    assert "engine <b>coord</b>" in head and ">OK</span>" in head
    assert "python -m sim run leader-minority-split --seed 1" in head
    assert f"ops ok={split.ops['ok']} fail={split.ops['fail']}" in head


def test_one_lane_per_node_with_the_leaders_terms(split: RunResult, split_doc: str) -> None:
    root = _parse(split_doc)
    lanes = _all(root, "g", "node")
    assert [int(g.get("data-node", "0")) for g in lanes] == sorted(split.world.nodes)
    leading = {
        (int(el.get("data-node", "0")), int(el.get("data-term", "0")))
        for el in _all(root, "rect", "leader")
    }
    assert leading == {(node, term) for _, term, node in split.leaders}
    assert len(split.leaders) >= 2  # the first leader, and the majority's after the split
    for _, term, node in split.leaders:
        lane = next(g for g in lanes if g.get("data-node") == str(node))
        texts = ["".join(t.itertext()) for t in lane.iter(NS + "text")]
        assert any(f"leads t{term}" in t or f"t{term}," in t for t in texts), texts
        rect = next(r for r in _all(lane, "rect", "leader") if r.get("data-term") == str(term))
        assert f"n{node} leader, term {term}" in _title(rect)
    # Every lane shows roles (follower at least) with terms.
    for g in lanes:
        assert _all(g, "rect", "follower")


def test_partition_is_shaded_and_names_the_cut_off_nodes(split: RunResult, split_doc: str) -> None:
    root = _parse(split_doc)
    minority = sorted([split.run.names["old"], split.run.names["buddy"]])
    (span,) = _all(root, "rect", "split")
    assert span.get("data-cut") == ",".join(f"n{n}" for n in minority)
    title = _title(span)
    assert "partition leader-minority" in title
    assert "cut off from a majority: " + ",".join(f"n{n}" for n in minority) in title
    for g in _all(root, "g", "node"):
        n = int(g.get("data-node", "0"))
        strong = _all(g, "rect", "cut")
        light = _all(g, "rect", "cutp")
        if n in minority:
            assert len(strong) == 1 and not light
            assert f"n{n} cut off from a majority" in _title(strong[0])
        else:
            assert len(light) == 1 and not strong


def test_operation_marks_add_up_to_the_runs_counts(split: RunResult, split_doc: str) -> None:
    root = _parse(split_doc)
    assert _op_counts(root) == split.ops
    assert split.ops["ok"] and split.ops["fail"] and split.ops["info"]
    clients = {op.client for op in split.world.history.ops}
    assert {int(g.get("data-client", "0")) for g in _all(root, "g", "client")} == clients


def test_a_caught_mutant_shows_its_violations(tmp_path: Path) -> None:
    out = tmp_path / "f8.html"
    argv = ["run", "figure-8", "--seed", "1", "--engine", "commit-by-counting"]
    assert main([*argv, "--html", str(out)]) == 1
    doc = out.read_text(encoding="utf-8")
    root = _parse(doc)
    res = run_scenario(load("figure-8"), 1, node_class=MUTANTS["commit-by-counting"])
    assert res.violations
    lines = _all(root, "line", "viol")
    assert lines
    titles = "\n".join(_title(el) for el in lines)
    assert res.violations[0].render() in titles
    assert "engine <b>commit-by-counting</b>" in doc and "VIOLATION" in doc
    labels = " ".join("".join(t.itertext()) for t in _all(root, "text", "vlbl"))
    assert res.violations[0].kind in labels
    for v in res.violations:  # all listed in full under the picture
        assert escape(v.render(), quote=True) in doc


def test_operations_a_violation_names_are_marked(tmp_path: Path) -> None:
    res = run_scenario(load("paused-leader"), 1, node_class=MUTANTS["read-without-quorum"])
    assert any(v.kind == "linearizability" for v in res.violations)
    root = _parse(render(res))
    flagged = _all(root, "rect", "flagged")
    assert flagged and all("named by a violation" in _title(el) for el in flagged)
    assert _op_counts(root) == res.ops


def test_explore_writes_the_first_failing_seeds_picture(tmp_path: Path) -> None:
    out = tmp_path / "explore.html"
    argv = ["explore", "--seeds", "2", "--start", "1", "--engine", "truncate-on-append"]
    assert main([*argv, "--html", str(out)]) == 1
    doc = out.read_text(encoding="utf-8")
    _parse(doc)
    assert "explore:1" in doc and "VIOLATION" in doc


def test_map_scenario_shows_who_serves_each_vip() -> None:
    res = run_scenario(load("vip-failover"), 1)
    fleet = res.world.fleet
    assert fleet is not None
    root = _parse(render(res))
    vips = _all(root, "g", "vip")
    assert sorted(g.get("data-address", "") for g in vips) == sorted(fleet.vips)
    held = _all(root, "rect", "held")
    assert len(held) == len(fleet.vip_checker.intervals)
    for iv in fleet.vip_checker.intervals:
        assert any(
            f"{iv.agent} serves {iv.address} at epoch {iv.epoch}" in _title(el) for el in held
        )
    agents = _all(root, "g", "agent")
    assert len(agents) == len(fleet.agents)
    (dead,) = fleet.deaths
    lane = next(g for g in agents if g.get("data-agent") == dead[1])
    assert _all(lane, "rect", "down")


LONG = """
name = "long-run"
summary = "60 s of flapping partitions and crashes under many clients"
nodes = 5
duration = "60s"
heal_at = "50s"

[network]
delay = ["1ms", "6ms"]

[workload]
clients = 10
keys = 4

[[step]]
wait = "leader"
within = "5s"

[[step]]
at = "5s"
do = "flap"
for = "20s"
every = ["500ms", "3s"]

[[step]]
at = "27s"
do = "storm"
for = "8s"
every = ["300ms", "1s"]
down = ["50ms", "400ms"]

[[step]]
at = "50s"
do = "heal-all"
"""


def test_a_long_run_with_thousands_of_operations_stays_small(tmp_path: Path) -> None:
    path = tmp_path / "long.toml"
    path.write_text(LONG)
    res = run_scenario(load(path), 3, check_linearizability=False)
    assert res.sim_us >= 60_000_000 and len(res.world.history.ops) > 3000
    doc = render(res)
    assert len(doc) < 2_000_000
    root = _parse(doc)
    assert _op_counts(root) == res.ops
    assert len(_all(root, "rect", "op")) < len(res.world.history.ops)  # neighbours merged
    assert any("operations ok" in _title(el) for el in _all(root, "rect", "op"))
    assert [int(g.get("data-node", "0")) for g in _all(root, "g", "node")] == [1, 2, 3, 4, 5]
    assert len(_all(root, "rect", "split")) >= 3  # the flaps
    assert _all(root, "rect", "down")  # the storm's crashes
