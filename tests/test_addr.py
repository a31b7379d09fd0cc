"""target/addr.py: VIPs on loopback (development) and on interfaces (real mode).

InterfaceVips is tested in network namespaces this test creates and deletes:
two holders, ``a`` and ``b``, each with a veth into a bridge in a third, the
``peer``, which plays the initiator's host. Addresses are 10.x, inside those
namespaces only; nothing is created in, or sent from, the root namespace (the
veths are made directly inside the namespaces, and every client and server
runs under ``ip netns exec``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from target import addr
from target.addr import InterfaceVips, LoopbackVips, VipError

PORT = 7777

# A server that answers every connection with its namespace's name, until killed.
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[2].encode()); c.close()
"""
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1) as c:
        c.settimeout(1); print(c.recv(100).decode())
except OSError as e:
    print("error", e)
"""


async def test_loopback_vips_record_state() -> None:
    vips = LoopbackVips()
    assert await vips.held() == set()
    await vips.up("127.0.10.1")
    await vips.up("127.0.10.1")
    await vips.up("127.0.10.2")
    assert await vips.held() == {"127.0.10.1", "127.0.10.2"}
    await vips.down("127.0.10.1")
    await vips.down("127.0.10.1")
    assert await vips.held() == {"127.0.10.2"}
    with pytest.raises(ValueError):
        await vips.up("10.0.0.1")  # development mode never claims a real address


def test_interface_vips_arguments() -> None:
    assert InterfaceVips("eth0", None).label == "eth0:vip"
    assert InterfaceVips("enp0s31f6xyz", "n1").label == "enp0s31f6xyz:v"
    assert InterfaceVips("eth0", None, label="eth0:7").label == "eth0:7"
    for device, netns, label in [
        ("", None, None),
        ("a-very-long-name", None, None),
        ("eth0", "../etc", None),
        ("eth0", None, "eth0"),  # the device's own label would list its own address
        ("eth0", None, "eth1:vip"),
        ("enp0s31f6xyzwq", None, None),  # no room left for a label
    ]:
        with pytest.raises(ValueError):
            InterfaceVips(device, netns, label=label)


@dataclass
class Lan:
    a: str
    b: str
    peer: str
    net: str  # "10.N.M": a /24 inside the namespaces


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def lan() -> Iterator[Lan]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = f"{os.getpid() % 10000}{secrets.token_hex(2)}"
    names = [f"cv{r}-{tag}" for r in ("a", "b", "p")]
    made: list[str] = []
    try:
        for ns in names:
            r = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        a, b, peer = names
        net = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250)}"
        _ip("-n", peer, "link", "add", "br0", "type", "bridge")
        for ns, dev, host in ((a, "va", 1), (b, "vb", 2)):
            # Both ends are created inside namespaces: nothing appears in the root one.
            _ip("-n", peer, "link", "add", f"p{dev}", "type", "veth", "peer", dev, "netns", ns)
            _ip("-n", peer, "link", "set", f"p{dev}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{net}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", peer, "addr", "add", f"{net}.254/24", "dev", "br0")
        _ip("-n", peer, "link", "set", "br0", "up")
        yield Lan(a, b, peer, net)
    finally:
        for ns in made:  # takes its veths and the bridge with it
            subprocess.run(["ip", "netns", "del", ns], check=False)


class Server:
    """A TCP server inside a namespace, stopped by its PID."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, str(PORT), ns],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


def _connect_from(ns: str, address: str) -> str:
    """Who answers ``address`` as seen from inside ``ns`` (at most ~2 s)."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, address, str(PORT)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()


def _mac(ns: str, dev: str) -> str:
    return str(json.loads(_ip("-n", ns, "-j", "link", "show", dev))[0]["address"])


def _neighbour(ns: str, address: str) -> str | None:
    entries = json.loads(_ip("-n", ns, "-j", "neigh", "show", address) or "[]")
    return str(entries[0]["lladdr"]) if entries and "lladdr" in entries[0] else None


async def test_interface_vips_move_between_namespaces(
    lan: Lan, monkeypatch: pytest.MonkeyPatch
) -> None:
    vip = f"{lan.net}.100"
    a, b = InterfaceVips("va", lan.a), InterfaceVips("vb", lan.b)
    servers = [Server(lan.a), Server(lan.b)]
    try:
        assert await a.held() == set()  # the node's own 10.x.1/24 is not a VIP
        assert _connect_from(lan.peer, vip).startswith("error")

        await a.up(vip)
        await a.up(vip)  # idempotent
        assert await a.held() == {vip}
        assert await InterfaceVips("va", lan.a).held() == {vip}  # what a restarted agent sees
        assert _connect_from(lan.peer, vip) == lan.a
        assert _neighbour(lan.peer, vip) == _mac(lan.a, "va")

        t0 = time.monotonic()
        await a.down(vip)
        assert time.monotonic() - t0 < 1.0
        await a.down(vip)  # idempotent
        assert await a.held() == set()
        assert _connect_from(lan.peer, vip).startswith("error")

        # b takes it: its gratuitous ARP rewrites the peer's entry, which still
        # points at a's MAC, before the peer sends b anything. Without it (the
        # control), the entry stays wrong.
        with monkeypatch.context() as m:
            m.setattr(addr, "_announce", lambda device, vip: None)
            await b.up(vip)
            time.sleep(0.2)
            assert _neighbour(lan.peer, vip) == _mac(lan.a, "va")
            await b.down(vip)
        await b.up(vip)
        deadline = time.monotonic() + 1.0
        while _neighbour(lan.peer, vip) != _mac(lan.b, "vb") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _neighbour(lan.peer, vip) == _mac(lan.b, "vb")
        assert _connect_from(lan.peer, vip) == lan.b
        await b.down(vip)
    finally:
        for s in servers:
            s.stop()


async def test_interface_vips_report_failures(lan: Lan) -> None:
    with pytest.raises(VipError, match="missing"):
        await InterfaceVips("missing", lan.a).up(f"{lan.net}.100")
    with pytest.raises(VipError):
        await InterfaceVips("va", f"{lan.a}-gone").held()
    with pytest.raises(ValueError):
        await InterfaceVips("va", lan.a).up("not-an-address")


async def test_an_address_nobody_renews_goes_by_itself(lan: Lan) -> None:
    """The kernel enforces the holder's window when the agent cannot: an address whose
    lifetime is not renewed (its agent died, its host lives) is removed, and one that is
    renewed stays."""
    gone, kept = f"{lan.net}.101", f"{lan.net}.102"
    vips = InterfaceVips("va", lan.a)
    await vips.up(gone, lifetime_s=1.0)
    await vips.up(kept, lifetime_s=1.0)
    assert await vips.held() == {gone, kept}
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and gone in await vips.held():
        await vips.keep(kept, 1.0)  # as heartbeats do
        await asyncio.sleep(0.2)
    held = await vips.held()
    assert gone not in held and kept in held
    await vips.down(kept)
    assert await vips.held() == set()
