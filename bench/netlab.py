"""A network of "hosts" on one machine: network namespaces joined by a bridge.

    with Lab(["ctl", "t1", "t2", "cli"]) as lab:
        lab.spawn("t1", ["tgtd", "-f", ...], log)   # a process inside t1's namespace
        lab.run("cli", ["iscsi-inq", url])          # a command inside cli's namespace
        lab.call("cli", fetch, url)                 # Python inside cli's namespace (a thread)
        t0 = lab.kill_host("t1")                    # its link down, then its processes killed
        lab.holders(vip)                            # which live hosts have the address now
        lab.revive("t1")                            # a clean reboot: only its own address, up

A bridge namespace holds a bridge; each host namespace is joined to it by a
veth pair (``veth-NAME`` inside the host, made directly inside the namespaces:
nothing ever appears in the root one) and has one address ``10.A.B.H/24``,
a /24 drawn per run; loopback is up everywhere. Names are ``crd{pid}{tag}-NAME``
so that parallel runs cannot collide. ``close`` (or leaving the ``with``)
stops every process in every namespace, by PID, and deletes the namespaces
with their links, whatever happened before.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from target.addr import enter_netns

T = TypeVar("T")
_RTM_NEWADDR, _RTM_GETADDR, _NLMSG_ERROR, _NLMSG_DONE = 20, 22, 2, 3
_IFA_ADDRESS, _IFA_LOCAL = 1, 2


class LabError(Exception):
    pass


@dataclass(frozen=True)
class Host:
    name: str
    ns: str  # the namespace
    dev: str  # its veth, inside ns
    address: str  # its own 10.x address


def ip(*args: str, timeout: float = 10.0) -> str:
    """``ip ARGS`` from the root namespace (configuration only, never traffic)."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


class Lab:
    def __init__(self, hosts: Iterable[str]) -> None:
        names = list(hosts)
        if len(set(names)) != len(names) or not 0 < len(names) < 200:
            raise ValueError("host names must be distinct, 1 to 199 of them")
        if any(not n.isalnum() or len(n) > 6 for n in names):
            raise ValueError("host names are letters and digits, at most 6")
        self.prefix = f"crd{os.getpid()}{secrets.token_hex(2)}"
        self.net = f"10.{20 + os.getpid() % 200}.{secrets.randbelow(250)}"
        self.bridge = f"{self.prefix}-br"
        self.hosts = {
            n: Host(n, f"{self.prefix}-{n}", f"veth-{n}", f"{self.net}.{10 + i}")
            for i, n in enumerate(names)
        }
        self.dead: set[str] = set()
        self._made: list[str] = []
        self._procs: list[tuple[subprocess.Popen[bytes], IO[bytes] | None, str]] = []
        self._threads: dict[str, ThreadPoolExecutor] = {}
        self._nl: dict[str, tuple[socket.socket, threading.Lock]] = {}
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        for ns in [self.bridge, *(h.ns for h in self.hosts.values())]:
            ip("netns", "add", ns)
            self._made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge, "link", "set", "br0", "up")
        for i, h in enumerate(self.hosts.values()):
            port = f"p{i}"
            ip("-n", self.bridge, "link", "add", port, "type", "veth", "peer", h.dev, "netns", h.ns)
            ip("-n", self.bridge, "link", "set", port, "master", "br0", "up")
            ip("-n", h.ns, "addr", "add", f"{h.address}/24", "dev", h.dev)
            ip("-n", h.ns, "link", "set", h.dev, "up")

    def address(self, last: int) -> str:
        """Another address of the lab's /24 (a VIP, say): ``10.A.B.last``."""
        return f"{self.net}.{last}"

    # ---- processes and code inside a namespace ------------------------------------------

    def argv(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host].ns, *argv]

    def run(
        self, host: str, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(host, argv), capture_output=True, text=True, timeout=timeout
        )

    def spawn(
        self, host: str, argv: list[str], log: Path | None = None, **kw: Any
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host`` (``ip netns exec`` execs it: same PID)."""
        out = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed in close()
        kw.setdefault("stdout", out or subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.STDOUT)
        proc = subprocess.Popen(self.argv(host, argv), stdin=subprocess.DEVNULL, **kw)
        self._procs.append((proc, out, host))
        return proc

    def call(self, host: str, fn: Callable[..., T], *args: Any, timeout: float = 120) -> T:
        """``fn(*args)`` in a thread that lives inside ``host``'s namespace."""
        pool = self._threads.get(host)
        if pool is None:
            ns = self.hosts[host].ns
            pool = ThreadPoolExecutor(1, f"netns-{host}", initializer=enter_netns, initargs=(ns,))
            self._threads[host] = pool
        return pool.submit(fn, *args).result(timeout)

    def pids(self, host: str) -> list[int]:
        """Every process inside ``host``'s namespace."""
        return [int(p) for p in ip("netns", "pids", self.hosts[host].ns).split()]

    # ---- host death and rebirth -----------------------------------------------------------

    def kill_host(self, host: str, pids: Iterable[int] | None = None) -> float:
        """The host dies: its link goes down first, then its processes are killed (all of
        them, or ``pids``), by PID. Returns the monotonic instant the link went down."""
        h = self.hosts[host]
        t0 = time.monotonic()
        ip("-n", h.ns, "link", "set", h.dev, "down")
        self.dead.add(host)
        for pid in self.pids(host) if pids is None else pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc, _, where in self._procs:  # reap our own children among them
            if where == host and proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        return t0

    def revive(self, host: str) -> None:
        """As after a reboot: no address but its own (a dead holder's VIP is gone), link up."""
        h = self.hosts[host]
        ip("-n", h.ns, "addr", "flush", "dev", h.dev)
        ip("-n", h.ns, "addr", "add", f"{h.address}/24", "dev", h.dev)
        ip("-n", h.ns, "link", "set", h.dev, "up")
        self.dead.discard(host)

    # ---- what the network looks like ------------------------------------------------------

    def addresses(self, host: str) -> set[str]:
        """IPv4 addresses configured in ``host`` (a netlink dump: ~0.1 ms, no process)."""
        if host not in self._nl:
            self._nl[host] = (
                self.call(host, socket.socket, 16, socket.SOCK_RAW, 0),
                threading.Lock(),
            )
        sock, lock = self._nl[host]
        seq = secrets.randbelow(1 << 31)
        req = struct.pack("=IHHII", 24, _RTM_GETADDR, 0x301, seq, 0) + struct.pack(
            "=BBBBI", socket.AF_INET, 0, 0, 0, 0
        )
        found: set[str] = set()
        with lock:
            sock.sendto(req, (0, 0))
            for _ in range(1000):
                data = sock.recv(1 << 16)
                off = 0
                while off + 16 <= len(data):
                    length, kind, _, mseq, _ = struct.unpack_from("=IHHII", data, off)
                    if length < 16:
                        raise LabError("bad netlink message")
                    if mseq == seq and kind in (_NLMSG_DONE, _NLMSG_ERROR):
                        return found
                    if mseq == seq and kind == _RTM_NEWADDR:
                        a = off + 24  # after nlmsghdr and ifaddrmsg: attributes
                        while a + 4 <= off + length:
                            alen, atype = struct.unpack_from("=HH", data, a)
                            if alen < 4:
                                break
                            if atype in (_IFA_ADDRESS, _IFA_LOCAL) and alen == 8:
                                found.add(socket.inet_ntoa(data[a + 4 : a + 8]))
                            a += (alen + 3) & ~3
                    off += (length + 3) & ~3
        raise LabError("netlink dump did not end")

    def holders(self, address: str) -> set[str]:
        """Hosts, not dead, that have ``address`` configured right now."""
        return {h for h in self.hosts if h not in self.dead and address in self.addresses(h)}

    def mac(self, host: str) -> str:
        h = self.hosts[host]
        return ip("-n", h.ns, "-o", "link", "show", h.dev).split("link/ether ")[1].split()[0]

    def neighbour(self, host: str, address: str) -> tuple[str, str] | None:
        """(MAC, state) of ``host``'s neighbour entry for ``address``, if it has one."""
        out = ip("-n", self.hosts[host].ns, "neigh", "show", address).split()
        if "lladdr" not in out:
            return None
        return out[out.index("lladdr") + 1], out[-1]

    # ---- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        for pool in self._threads.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._threads = {}
        for sock, _ in self._nl.values():
            sock.close()  # a socket keeps its namespace alive
        self._nl = {}
        for proc, _, _ in self._procs:  # ours first, gently: a clean stop if they have one
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, out, _ in self._procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if out is not None:
                out.close()
        self._procs = []
        for ns in reversed(self._made):  # then whatever is left in a namespace (tgtds)
            for _ in range(100):  # bounded: SIGKILL is only slow for a process in the kernel
                try:
                    left = [int(p) for p in ip("netns", "pids", ns).split()]
                except LabError:
                    break
                if not left:
                    break
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._made = []
