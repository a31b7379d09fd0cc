"""Reading tgtadm's ``show`` output (tgt 1.0.85), as data.

``tgtadm --lld iscsi --op show --mode target`` prints, per target (samples in
tests/testdata/tgtadm/)::

    Target 1: iqn.2026-12.coord:vol.db1
        System information:
            Driver: iscsi
            State: ready
        I_T nexus information:
            I_T nexus: 2
                Initiator: iqn.2026-12.host:a alias: none
                Connection: 0
                    IP Address: 127.0.0.1
        LUN information:
            LUN: 1
                Type: disk
                Size: 67 MB, Block size: 512
                Backing store path: /srv/db1.img
        Account information:
            alice
            bob (outgoing)
        ACL information:
            ALL
            iqn.2026-12.host:c

The parser keys on the section headers and on ``Key: value`` lines, not on the
exact indentation, and skips lines it does not know, so a tgt that adds fields
still parses. ``I_T nexus`` is tgtd's session id (``--sid``). Initiator names
contain no spaces (RFC 3720), so the name ends at the first space; an alias
may have them. The controller LUN 0 has the path "None" (here: None).
ACL entries are initiator addresses, "ALL", or initiator names (``-Q``), in one
list. ``--mode portal`` prints ``Portal: ADDR:PORT,TPGT``, IPv6 in brackets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TARGET = re.compile(r"Target (\d+): (\S+)\s*\Z")
_SIZE = re.compile(r"(\d+) MB\b")


@dataclass(frozen=True, slots=True)
class Lun:
    lun: int
    path: str | None  # None for the controller LUN 0
    size_mb: int  # as tgtd prints it: decimal megabytes (10**6 bytes), rounded


@dataclass(frozen=True, slots=True)
class Session:
    sid: int
    initiator: str
    address: str | None  # the first connection's initiator IP
    cids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Target:
    tid: int
    iqn: str
    state: str = "ready"
    luns: tuple[Lun, ...] = ()
    sessions: tuple[Session, ...] = ()
    acl: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()

    def lun(self, n: int) -> Lun | None:
        return next((lun for lun in self.luns if lun.lun == n), None)


class _TargetBuilder:
    def __init__(self, tid: int, iqn: str) -> None:
        self.tid = tid
        self.iqn = iqn
        self.state = "ready"
        self.luns: list[Lun] = []
        self.sessions: list[Session] = []
        self.acl: list[str] = []
        self.accounts: list[str] = []
        self.lun: dict[str, str] | None = None  # the LUN being read
        self.session: dict[str, str] | None = None  # the session being read
        self.cids: list[int] = []

    def end_lun(self) -> None:
        if self.lun is not None and self.lun.get("LUN", "").isdigit():
            path = self.lun.get("Backing store path")
            size = _SIZE.match(self.lun.get("Size", ""))
            self.luns.append(
                Lun(
                    lun=int(self.lun["LUN"]),
                    path=None if path in (None, "None") else path,
                    size_mb=int(size.group(1)) if size else 0,
                )
            )
        self.lun = None

    def end_session(self) -> None:
        s = self.session
        if s is not None and s.get("I_T nexus", "").isdigit() and "Initiator" in s:
            self.sessions.append(
                Session(
                    sid=int(s["I_T nexus"]),
                    initiator=s["Initiator"].split(" ", 1)[0],
                    address=s.get("IP Address"),
                    cids=tuple(self.cids),
                )
            )
        self.session = None
        self.cids = []

    def build(self) -> Target:
        self.end_lun()
        self.end_session()
        return Target(
            tid=self.tid,
            iqn=self.iqn,
            state=self.state,
            luns=tuple(self.luns),
            sessions=tuple(self.sessions),
            acl=tuple(self.acl),
            accounts=tuple(self.accounts),
        )


_SECTIONS = {
    "System information:": "system",
    "I_T nexus information:": "nexus",
    "LUN information:": "lun",
    "Account information:": "account",
    "ACL information:": "acl",
}


def parse_targets(text: str) -> dict[str, Target]:
    """``show --mode target`` output: every target, by IQN."""
    targets: dict[str, Target] = {}
    current: _TargetBuilder | None = None
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _TARGET.match(raw.rstrip())
        if m is not None and not raw[0].isspace():
            if current is not None:
                targets[current.iqn] = current.build()
            current, section = _TargetBuilder(int(m.group(1)), m.group(2)), ""
            continue
        if current is None:
            continue  # nothing before the first target means anything
        if line in _SECTIONS:
            current.end_lun()
            current.end_session()
            section = _SECTIONS[line]
            continue
        key, sep, value = line.partition(": ")
        if not sep and line.endswith(":"):
            key, sep, value = line[:-1], ":", ""
        match section:
            case "system":
                if key == "State":
                    current.state = value
            case "nexus":
                if key == "I_T nexus":
                    current.end_session()
                    current.session = {}
                if current.session is not None and sep:
                    if key == "Connection" and value.isdigit():
                        current.cids.append(int(value))
                    current.session.setdefault(key, value)  # the first connection's address
            case "lun":
                if key == "LUN":
                    current.end_lun()
                    current.lun = {}
                if current.lun is not None and sep:
                    # The path is everything after the key, spaces included.
                    current.lun[key] = value if key != "Backing store path" else _after(raw, sep)
            case "acl":
                current.acl.append(line)
            case "account":
                current.accounts.append(line)
            case _:
                pass
    if current is not None:
        targets[current.iqn] = current.build()
    return targets


def _after(raw: str, sep: str) -> str:
    return raw.lstrip().partition(sep)[2].rstrip("\r\n")


def parse_portals(text: str) -> list[str]:
    """``--mode portal`` output: the portals as ``ADDR:PORT`` (the TPGT dropped), sorted."""
    portals = []
    for line in text.splitlines():
        key, sep, value = line.strip().partition(": ")
        if key == "Portal" and sep:
            portals.append(value.rpartition(",")[0] or value)
    return sorted(portals)
