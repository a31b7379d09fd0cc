"""Where a VIP physically lives: an address on an interface, or (development) loopback.

The agent decides *whether* it may serve a VIP (target/vip.py); these classes
make it so. ``down`` is the urgent one: when the lease goes stale the agent
calls it before anything else, so it is one short command (or nothing at all).

Two kinds:

- ``LoopbackVips`` (development mode): every address in 127.0.0.0/8 is already
  local on Linux, so there is nothing to configure; the portal's listening
  socket bound to the VIP *is* the holding, and closing it lets go. ``up`` and
  ``down`` only record the set, which a restarted agent starts empty (its
  sockets died with it).
- ``InterfaceVips`` (real mode): ``ip addr replace ADDR/32 dev DEV label
  DEV:vip``, then a gratuitous ARP so that neighbours whose cache still points
  at the previous holder's MAC switch at once instead of after their cache
  entry times out; ``ip addr del`` on ``down``. The address carries a lifetime
  (``valid_lft``), renewed with every acknowledged heartbeat (``keep``): if the
  agent dies while its host lives, the kernel removes the VIP itself about when
  the agent's own window would have closed, instead of answering ARP for a
  portal that is gone. The label marks our addresses:
  ``held()`` lists only those, so a restarted agent drops leftover VIPs without
  ever touching the node's own address. With a network namespace (several
  "hosts" on one machine), ``ip -n NS`` does the configuring and the ARP
  socket is opened inside the namespace.

Gratuitous ARP: one request and one reply (``sender IP = target IP = VIP``),
broadcast on DEV from an AF_PACKET socket. Linux overrides an existing
neighbour entry on either; by default (``arp_accept=0``) it creates no new
entry, so hosts that never talked to the VIP learn it by asking. The socket is
opened in a thread of its own that first moves itself (only itself: network
namespaces are per thread) into the namespace with setns(2) and then ends, so
no pooled thread is ever left in another namespace; Python 3.11 has no
``os.setns``, so it is called through libc. A failed announcement is logged,
not raised: the address is already up, and peers will still learn it by ARP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import shutil
import socket
import struct
import threading
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Protocol, TypeVar

log = logging.getLogger("coord.target.addr")

_T = TypeVar("_T")
_CLONE_NEWNET = 0x40000000
_ETH_P_ARP = 0x0806
_ARPHRD_ETHER = 1
_ABSENT = ("Address not found", "Cannot assign requested address")
_IFNAMSIZ = 16  # including the NUL: names and labels have at most 15 characters


class VipAddresses(Protocol):
    async def keep(self, address: str, lifetime_s: float) -> None:
        """Renew a held address's lifetime (real mode; nothing to do in development)."""
        ...

    async def up(self, address: str, lifetime_s: float | None = None) -> None:
        """Make ``address`` ours (idempotent)."""
        ...

    async def down(self, address: str) -> None:
        """Give ``address`` up (idempotent, and fast)."""
        ...

    async def held(self) -> set[str]:
        """The VIPs configured now (at start: leftovers of a crashed agent)."""
        ...


class VipError(Exception):
    """An ``ip`` command failed: the command and what it said."""

    def __init__(self, command: list[str], stderr: str) -> None:
        self.command = command
        self.stderr = stderr
        super().__init__(f"{' '.join(command)}: {stderr or 'failed'}")


class LoopbackVips:
    """Development mode: 127.x VIPs need no configuring; the portal's socket holds them."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def keep(self, address: str, lifetime_s: float) -> None:
        return None  # the socket dies with the agent: nothing outlives it

    async def up(self, address: str, lifetime_s: float | None = None) -> None:
        if not IPv4Address(address).is_loopback:
            raise ValueError(f"LoopbackVips serves 127.0.0.0/8 only, not {address}")
        self._held.add(address)

    async def down(self, address: str) -> None:
        self._held.discard(address)

    async def held(self) -> set[str]:
        return set(self._held)


class InterfaceVips:
    """Real mode: VIPs as /32 addresses on ``device``, announced by gratuitous ARP.

    ``netns`` names a network namespace (``ip netns add``) that holds ``device``,
    or is None for this process's own namespace: on a real host, the host's.
    """

    def __init__(
        self,
        device: str,
        netns: str | None,
        *,
        label: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        if not device or len(device) >= _IFNAMSIZ or "/" in device or device.isspace():
            raise ValueError(f"not an interface name: {device!r}")
        if netns is not None and (not netns or "/" in netns or netns in (".", "..")):
            raise ValueError(f"not a namespace name: {netns!r}")
        self.device = device
        self.netns = netns
        if label is None:
            label = next(
                (device + s for s in (":vip", ":v") if len(device + s) < _IFNAMSIZ), device
            )
        # ip requires the label to begin with the device name; it must differ from it,
        # or held() would list the node's own addresses too.
        if not label.startswith(device + ":") or len(label) >= _IFNAMSIZ:
            raise ValueError(f"label must be {device}:SOMETHING, at most 15 characters")
        self.label = label
        self.timeout_s = timeout_s
        self._ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "ip"

    async def up(self, address: str, lifetime_s: float | None = None) -> None:
        vip = str(IPv4Address(address))
        # replace, not add: idempotent (add fails with "File exists" the second time).
        await self._replace(vip, lifetime_s)
        try:
            await _in_thread(self.netns, lambda: _announce(self.device, vip))
        except OSError as e:
            log.warning("gratuitous ARP for %s on %s failed: %s", vip, self.device, e)

    async def keep(self, address: str, lifetime_s: float) -> None:
        await self._replace(str(IPv4Address(address)), lifetime_s)

    async def _replace(self, vip: str, lifetime_s: float | None) -> None:
        args = ["addr", "replace", f"{vip}/32", "dev", self.device, "label", self.label]
        if lifetime_s is not None:
            # Whole seconds, rounded up (the kernel counts in seconds): the address may
            # outlive the agent's window by under a second, never by a lease.
            lft = str(max(1, math.ceil(lifetime_s)))
            args += ["valid_lft", lft, "preferred_lft", lft]
        await self._run(*args)

    async def down(self, address: str) -> None:
        vip = str(IPv4Address(address))
        try:
            await self._run("addr", "del", f"{vip}/32", "dev", self.device)
        except VipError as e:
            # Not there: done already (iproute2 6.1 says the first, older ones the second).
            if not any(m in e.stderr for m in _ABSENT):
                raise

    async def held(self) -> set[str]:
        out = await self._run("-o", "-4", "addr", "show", "dev", self.device, "label", self.label)
        # "7: veth0    inet 10.9.0.7/32 scope global veth0:vip\       valid_lft forever ..."
        held = set()
        for line in out.splitlines():
            fields = line.split()
            if "inet" in fields[:-1]:
                held.add(fields[fields.index("inet") + 1].partition("/")[0])
        return held

    async def _run(self, *args: str) -> str:
        argv = [self._ip, *(("-n", self.netns) if self.netns else ()), *args]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except BaseException as e:  # timed out or cancelled: never leave it behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
            if isinstance(e, TimeoutError):
                raise VipError(argv, f"no answer in {self.timeout_s} s") from None
            raise
        if proc.returncode != 0:
            raise VipError(argv, err.decode(errors="replace").strip())
        return out.decode(errors="replace")


# --- gratuitous ARP, and running code inside a network namespace -----------------------


def _announce(device: str, vip: str) -> None:
    """Broadcast a gratuitous ARP request and reply for ``vip`` on ``device``."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:  # proto 0: receives nothing
        s.bind((device, 0))
        _, _, _, hatype, mac = s.getsockname()
        if hatype != _ARPHRD_ETHER or len(mac) != 6:
            log.debug("%s is not Ethernet: no gratuitous ARP", device)
            return
        ip = IPv4Address(vip).packed
        for op, target_mac in ((1, b"\0" * 6), (2, mac)):  # request; reply (tha = sha)
            arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, ip, target_mac, ip)
            frame = b"\xff" * 6 + mac + struct.pack("!H", _ETH_P_ARP) + arp
            s.sendto(frame.ljust(60, b"\0"), (device, _ETH_P_ARP))


def enter_netns(netns: str) -> None:
    """Move the *calling thread* into network namespace ``netns`` (/run/netns/NAME)."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns = getattr(os, "setns", None)  # Python 3.12+
        if setns is not None:
            setns(fd, _CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


async def _in_thread(netns: str | None, fn: Callable[[], _T]) -> _T:
    """``fn()`` in a new thread, inside ``netns`` if given; the thread then ends."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def succeed(result: _T) -> None:
        if not done.done():  # else the caller gave up waiting
            done.set_result(result)

    def fail(error: BaseException) -> None:
        if not done.done():
            done.set_exception(error)

    def run() -> None:
        try:
            if netns is not None:
                enter_netns(netns)  # raises rather than run fn() in the wrong namespace
            result = fn()
        except BaseException as e:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                loop.call_soon_threadsafe(fail, e)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(succeed, result)

    threading.Thread(target=run, name=f"netns-{netns}", daemon=True).start()
    return await done
