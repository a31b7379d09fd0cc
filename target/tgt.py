"""The product's driver for one tgtd, the user-space iSCSI target (Debian's tgt 1.0.85).

Theory of operation. Each target node runs one tgtd in the foreground (``-f``),
its own child, in its own session (a Ctrl-C at the terminal reaches the agent,
which stops tgtd in order, and not tgtd itself). Several tgtds share a machine
by control port (``-C N``: tgtadm talks to ``/var/run/tgtd/socket.N``) and by
portal address; each binds exactly its own ``ip:port``, never 0.0.0.0, or a
portal could not bind a VIP on the same port. Everything else goes through
``tgtadm``, run as an argument list with a bounded wait.

Facts this module is built on, checked against tgtd 1.0.85:

- tgtd falls back to the *wildcard* portals ``0.0.0.0:3260`` and ``[::]:3260``
  when it cannot bind the portal it was given (the address is not local, or
  the port is taken), and keeps running. So ``start`` first binds the portal
  itself (taken, or not an address of this host: refused before anything is
  spawned), then asks tgtd which portals it has and kills it at once if the
  answer is anything but exactly ours.
- A second tgtd on a control port in use exits at once with status 1
  ("another tgtd is using ...lock"); the lock is a POSIX lock, so its holder's
  PID is in /proc/locks. ``start`` names that PID; ``stop_leftover`` stops a
  tgtd an earlier run of the agent left behind.
- tgtd ignores SIGTERM (SIGINT kills it). A clean stop deletes every target,
  then ``--op delete --mode system``, which tgtd refuses ("invalid request")
  while any target exists and obeys within ~0.1 s otherwise. tgtd leaves its
  socket files behind; the driver removes them once its tgtd has exited (under
  tgtd's own lock, so never a live tgtd's). Control ports are 0..32767.
- ``delete --mode target --force`` refuses while a LUN has commands in flight
  ("this logical unit is still active"), which is always the case under load.
  So a target is removed as tgt-admin does it: unbind its ACL (no new logins),
  close each session's connections (``--op delete --mode conn``), then delete
  it with ``--force``, retrying briefly while in-flight commands drain.
  Initiators see their connections close; with the target gone they cannot log
  in again.
- tgtadm reports every failure with exit status 22 (a few with 107: cannot reach
  the daemon); the kind of failure is only in its stderr text.
- Target ids are whatever the caller picks; tgtd lets a deleted tid be used
  again. ``export`` takes one more than the highest tid in use.
- A LUN's size is read when the LUN is created (READ CAPACITY still says the
  old size after the file grew): a grown volume is seen only by a new export.
  ``show`` prints sizes in decimal megabytes, rounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import BinaryIO

from target.tgtshow import Lun, Session, Target, parse_portals, parse_targets

__all__ = ["Lun", "Session", "Target", "TgtError", "Tgtd", "remove_socket_files", "unavailable"]

log = logging.getLogger("coord.target.tgt")

SOCKET_DIR = Path("/var/run/tgtd")  # tgtd's compiled-in place for its control sockets
_RETRY_S = 0.02  # between polls of a tgtd that is starting, or of a target that is draining
_DELETE_ATTEMPTS = 100  # x _RETRY_S: how long a target's in-flight commands may take to drain
_REAP_S = 5.0  # after SIGKILL: only a process stuck in the kernel takes longer


def _executable(name: str) -> str | None:
    # /usr/sbin is not on every PATH (sudo, cron, some containers).
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    return found


def unavailable() -> str | None:
    """None if tgtd and tgtadm can be run here; otherwise why not, in plain words."""
    for name in ("tgtd", "tgtadm"):
        if _executable(name) is None:
            return f"{name} is not installed (apt-get install tgt)"
    if os.geteuid() != 0:
        return "tgtd needs root"
    return None


class TgtError(Exception):
    """tgtd or tgtadm failed: the command, what it said, and its exit status."""

    def __init__(self, command: Sequence[str], stderr: str, returncode: int | None = None) -> None:
        self.command = list(command)
        self.stderr = stderr
        self.returncode = returncode
        status = "" if returncode is None else f" (exit status {returncode})"
        super().__init__(f"{' '.join(self.command)}: {stderr or 'failed'}{status}")


@dataclass(frozen=True, slots=True)
class _Portal:
    address: str
    port: int

    @staticmethod
    def parse(portal: str) -> _Portal:
        host, sep, port = portal.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"portal must be ip:port, not {portal!r}")
        ip = ip_address(host.removeprefix("[").removesuffix("]"))
        if ip.is_unspecified:
            raise ValueError(f"tgtd must bind one address, not {portal!r}")
        return _Portal(str(ip), int(port))

    def __str__(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


class Tgtd:
    """One tgtd: started, driven and stopped through tgtadm; every wait is bounded."""

    def __init__(
        self,
        control_port: int,
        portal: str,
        log_path: Path | None = None,
        *,
        command_timeout_s: float = 5.0,
        start_timeout_s: float = 5.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if not 0 <= control_port <= 32767:  # tgtd refuses more ("out of range")
            raise ValueError(f"control port out of range: {control_port}")
        self.control_port = control_port
        self._portal = _Portal.parse(portal)
        self.portal = str(self._portal)
        self.log_path = log_path
        self.command_timeout_s = command_timeout_s
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._log: BinaryIO | None = None
        self._log_start = 0
        self._changing = asyncio.Lock()  # export and unexport: one at a time (tid choice)

    @property
    def pid(self) -> int | None:
        """tgtd's PID from ``start`` until ``stop`` (also if it died meanwhile: see ``alive``)."""
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    # --- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"tgtd for {self.portal} is already started")
        argv = [
            _executable("tgtd") or "tgtd",
            "-f",
            "-C",
            str(self.control_port),
            "--iscsi",
            f"portal={self.portal}",
        ]
        reason = unavailable()
        if reason is not None:
            raise TgtError(argv, reason)
        holder = _lock_holder(self.control_port)
        if holder is not None:
            raise TgtError(
                argv, f"control port {self.control_port} is in use by PID {holder} (left over?)"
            )
        _check_bindable(self._portal, argv)
        out = self._open_log()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # a Ctrl-C at the terminal is for the agent
            )
        except BaseException:
            self._close_log()
            raise
        log.info(
            "tgtd %d started on %s (control port %d)",
            self._proc.pid,
            self.portal,
            self.control_port,
        )
        try:
            await self._await_ready(argv)
        except BaseException:
            await self._kill()
            raise

    async def _await_ready(self, argv: list[str]) -> None:
        proc = self._proc
        assert proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        last = ""
        for _ in range(int(self.start_timeout_s / _RETRY_S) + 1):
            if proc.returncode is not None:
                raise TgtError(argv, f"tgtd exited: {self._log_tail()}", proc.returncode)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                out = await self._tgtadm(
                    "--lld", "iscsi", "--op", "show", "--mode", "portal", timeout_s=remaining
                )
            except TgtError as e:
                last = e.stderr  # not listening yet
                await asyncio.sleep(_RETRY_S)
                continue
            portals = parse_portals(out)
            if portals != [self.portal]:
                # The wildcard fallback (see the module's notes): never leave it running.
                raise TgtError(
                    argv,
                    f"tgtd listens on {', '.join(portals) or 'nothing'}, not {self.portal}: "
                    + self._log_tail(),
                )
            return
        raise TgtError(argv, f"tgtadm did not answer in {self.start_timeout_s} s: {last}")

    async def stop(self) -> None:
        """Delete every target, then the system; wait for the exit (bounded); else SIGKILL."""
        proc = self._proc
        if proc is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout_s
        try:
            if proc.returncode is None:
                try:
                    await self._shutdown(deadline)
                except TgtError as e:
                    log.warning("tgtd %d: clean stop failed, killing it: %s", proc.pid, e)
                remaining = deadline - loop.time()
                if proc.returncode is None and remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), remaining)
        finally:
            await self._kill()

    async def stop_leftover(self) -> int | None:
        """Stop a tgtd that an earlier run left on our control port; its PID, or None.

        For an agent that restarts after a crash: its old tgtd still holds the
        control port (and the portal), so ``start`` would refuse. Stopped the same
        way as ``stop`` (targets, system, bounded wait, then SIGKILL by PID).
        """
        if self._proc is not None:
            raise RuntimeError("stop_leftover is for a tgtd this driver did not start")
        pid = _lock_holder(self.control_port)
        if pid is None:
            return None
        if _comm(pid) != "tgtd":
            raise TgtError(["stop_leftover"], f"control port held by PID {pid}, not a tgtd")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout_s
        try:
            await self._shutdown(deadline)
        except TgtError as e:
            log.warning("left-over tgtd %d: clean stop failed, killing it: %s", pid, e)
        if not await _wait_gone(pid, deadline - loop.time()):
            if _comm(pid) == "tgtd":
                log.warning("left-over tgtd %d did not exit: SIGKILL", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not await _wait_gone(pid, _REAP_S):
                raise TgtError(["stop_leftover"], f"tgtd {pid} survived SIGKILL")
        remove_socket_files(self.control_port)
        return pid

    async def _shutdown(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        targets = await self._targets(deadline - loop.time())
        for t in sorted(targets.values(), key=lambda t: t.tid):
            await self._delete_target(t, deadline)
        await self._tgtadm("--op", "delete", "--mode", "system", timeout_s=deadline - loop.time())

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.returncode is None:
                log.warning("tgtd %d did not exit: SIGKILL", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                try:
                    await asyncio.wait_for(proc.wait(), _REAP_S)
                except TimeoutError:
                    log.error("tgtd %d survived SIGKILL for %.0f s", proc.pid, _REAP_S)
            elif proc is not None:
                log.info("tgtd %d exited with status %s", proc.pid, proc.returncode)
            if proc is not None and proc.returncode is not None:
                remove_socket_files(self.control_port)
        finally:
            self._close_log()

    # --- targets --------------------------------------------------------------------

    async def targets(self) -> dict[str, Target]:
        """Every target, by IQN, with its LUNs, sessions and ACL."""
        return await self._targets(self.command_timeout_s)

    async def _targets(self, timeout_s: float) -> dict[str, Target]:
        out = await self._tgtadm(
            "--lld", "iscsi", "--op", "show", "--mode", "target", timeout_s=timeout_s
        )
        return parse_targets(out)

    async def sessions(self) -> list[tuple[str, str]]:
        """(target IQN, initiator name) for every live session, sorted."""
        return sorted(
            (t.iqn, s.initiator) for t in (await self.targets()).values() for s in t.sessions
        )

    async def export(self, iqn: str, backing: Path) -> int:
        """Serve ``backing`` as LUN 1 of target ``iqn`` to every initiator; the tid.

        Idempotent: a target already exporting that file is completed if an earlier
        attempt stopped half-way, and its tid returned. A target exporting another
        file is refused (``TgtError``): unexport it first.
        """
        if not iqn or len(iqn) > 223 or any(c.isspace() for c in iqn):
            raise ValueError(f"not an iSCSI name: {iqn!r}")
        path = backing.resolve()  # tgtd opens it: relative to tgtd's cwd otherwise
        if not path.is_file():
            raise FileNotFoundError(f"no backing file {path}")
        async with self._changing:
            created = False
            target: Target | None = None
            for _ in range(3):
                targets = await self.targets()
                target = targets.get(iqn)
                if target is not None:
                    break
                tid = max((t.tid for t in targets.values()), default=0) + 1
                try:
                    await self._tgtadm(
                        "--lld", "iscsi", "--op", "new", "--mode", "target",
                        "--tid", str(tid), "--targetname", iqn,
                    )  # fmt: skip
                except TgtError as e:
                    if "already exists" in e.stderr:
                        continue  # someone else took that tid (or the name): look again
                    raise
                target, created = Target(tid=tid, iqn=iqn), True
                break
            if target is None:
                raise TgtError(["export", iqn], "no free target id after 3 attempts")
            tid_s = str(target.tid)
            lun = target.lun(1)
            if lun is None:
                try:
                    await self._tgtadm(
                        "--lld", "iscsi", "--op", "new", "--mode", "logicalunit",
                        "--tid", tid_s, "--lun", "1", "--backing-store", str(path),
                    )  # fmt: skip
                except TgtError:
                    if created:  # leave nothing half-made behind
                        with contextlib.suppress(TgtError):
                            await self._delete_target(target, None)
                    raise
            elif lun.path != str(path):
                raise TgtError(
                    ["export", iqn, str(path)],
                    f"target {target.tid} ({iqn}) already exports {lun.path}",
                )
            if "ALL" not in target.acl:
                await self._tgtadm(
                    "--lld", "iscsi", "--op", "bind", "--mode", "target",
                    "--tid", tid_s, "--initiator-address", "ALL",
                )  # fmt: skip
            return target.tid

    async def unexport(self, iqn: str) -> None:
        """Remove target ``iqn`` and end its sessions (nothing to do if it is absent)."""
        async with self._changing:
            target = (await self.targets()).get(iqn)
            if target is not None:
                await self._delete_target(target, None)

    async def _delete_target(self, target: Target, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()

        def left() -> float:
            return self.command_timeout_s if deadline is None else deadline - loop.time()

        tid = str(target.tid)
        for entry in target.acl:  # first: nobody may log in again meanwhile
            flag = "--initiator-name" if _is_iscsi_name(entry) else "--initiator-address"
            try:
                await self._tgtadm(
                    "--lld", "iscsi", "--op", "unbind", "--mode", "target",
                    "--tid", tid, flag, entry, timeout_s=left(),
                )  # fmt: skip
            except TgtError as e:
                log.debug("unbind %s from target %s: %s", entry, tid, e)
        current: Target | None = target
        for attempt in range(_DELETE_ATTEMPTS):
            for s in current.sessions if current is not None else ():
                for cid in s.cids:
                    try:
                        await self._tgtadm(
                            "--lld", "iscsi", "--op", "delete", "--mode", "conn", "--tid", tid,
                            "--sid", str(s.sid), "--cid", str(cid), timeout_s=left(),
                        )  # fmt: skip
                    except TgtError as e:  # it may have ended by itself meanwhile
                        log.debug("close session %d of target %s: %s", s.sid, tid, e)
            try:
                await self._tgtadm(
                    "--lld", "iscsi", "--op", "delete", "--mode", "target",
                    "--tid", tid, "--force", timeout_s=left(),
                )  # fmt: skip
                return
            except TgtError as e:
                if "can't find the target" in e.stderr:
                    return
                if "still active" not in e.stderr or attempt == _DELETE_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(_RETRY_S)  # commands in flight: let them drain
            current = next(
                (t for t in (await self._targets(left())).values() if t.tid == target.tid), None
            )

    # --- plumbing -------------------------------------------------------------------

    async def _tgtadm(self, *args: str, timeout_s: float | None = None) -> str:
        argv = [_executable("tgtadm") or "tgtadm", "-C", str(self.control_port), *args]
        timeout = self.command_timeout_s if timeout_s is None else timeout_s
        if timeout <= 0:
            raise TgtError(argv, "no time left")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException as e:  # timed out (tgtd wedged) or cancelled: never leave it
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), _REAP_S)
            if isinstance(e, TimeoutError):
                raise TgtError(argv, f"no answer in {timeout:.1f} s") from None
            raise
        if proc.returncode != 0:
            raise TgtError(argv, err.decode(errors="replace").strip(), proc.returncode)
        return out.decode(errors="replace")

    def _open_log(self) -> BinaryIO:
        # O_APPEND: tgtd shares this file offset; our reads use pread and never move it.
        # Without a log_path the output still goes somewhere, for _log_tail's messages.
        if self.log_path is None:
            f = tempfile.TemporaryFile(mode="a+b")  # noqa: SIM115 - closed by _close_log
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.log_path, "a+b")  # noqa: SIM115 - closed by _close_log
        self._log, self._log_start = f, os.fstat(f.fileno()).st_size
        return f

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        fd = self._log.fileno()
        end = os.fstat(fd).st_size
        start = max(self._log_start, end - limit)
        text = os.pread(fd, end - start, start).decode(errors="replace")
        return " | ".join(line for line in text.splitlines() if line.strip())


def _is_iscsi_name(entry: str) -> bool:
    return entry.startswith(("iqn.", "eui.", "naa."))


def _check_bindable(portal: _Portal, argv: list[str]) -> None:
    """Refuse a portal tgtd could not bind (tgtd would fall back to the wildcard)."""
    family = socket.AF_INET6 if ":" in portal.address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tgtd does
        try:
            s.bind((portal.address, portal.port))
        except OSError as e:
            raise TgtError(argv, f"cannot bind {portal}: {e.strerror}") from None


def _lock_holder(control_port: int) -> int | None:
    """The PID holding tgtd's POSIX lock for ``control_port``, from /proc/locks."""
    try:
        st = os.stat(SOCKET_DIR / f"socket.{control_port}.lock")
        locks = Path("/proc/locks").read_text()
    except FileNotFoundError:
        return None
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    # "1: POSIX  ADVISORY  WRITE 16954 fe:00:1441997 0 0"; a waiter has "->" after the id.
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "POSIX" and fields[5] == ident:
            return int(fields[4])
    return None


def remove_socket_files(control_port: int) -> None:
    """Remove the socket files an exited (or killed) tgtd left, unless a tgtd holds them.

    Done while holding tgtd's own lock: a tgtd starting meanwhile either fails
    to take it (and exits) or makes fresh files after these are gone.
    """
    lock_path = SOCKET_DIR / f"socket.{control_port}.lock"
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1)
    except OSError:
        os.close(fd)  # in use again: not ours to remove
        return
    try:
        for path in (SOCKET_DIR / f"socket.{control_port}", lock_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        os.close(fd)  # releases the lock


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"  # exited, not yet reaped by its parent


async def _wait_gone(pid: int, timeout_s: float) -> bool:
    for _ in range(max(1, int(timeout_s / _RETRY_S))):
        if _gone(pid):
            return True
        await asyncio.sleep(_RETRY_S)
    return _gone(pid)
