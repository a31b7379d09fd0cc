"""A real tgtd on a loopback address, for tests: started, given targets, stopped by PID.

tgtd ignores SIGTERM, so it is stopped the way DESIGN.md says: delete each
target (--force), then the system, then wait for the PID; SIGKILL by PID
only if that did not work. Two tgtd-specific traps: one that cannot bind
its portal keeps running without it, and one whose control port is taken
exits; both are detected (from its log) and the start is retried elsewhere.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

TOOLS = ("tgtd", "tgtadm", "iscsi-inq", "iscsi-ls", "iscsi-readcapacity16")


def skip_reason() -> str | None:
    """Why tests with real tgtd and libiscsi cannot run here, or None."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install tgt libiscsi-bin)"
    if os.geteuid() != 0:
        return "tgtd must run as root"
    return None


def free_loopback(port: int, prefix: str, rng: random.Random) -> str:
    """An address ``prefix.N`` (in 127.0.0.0/8) where ``port`` can be bound now."""
    for _ in range(50):
        ip = f"{prefix}.{rng.randint(2, 254)}"
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
            except OSError:
                continue
        return ip
    raise RuntimeError(f"no free {prefix}.N:{port}")


class Tgtd:
    def __init__(self, workdir: Path, ip: str, port: int = 3260) -> None:
        assert ip.startswith("127."), "tests use loopback only"
        self.dir = workdir
        self.ip = ip
        self.port = port
        self.control = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.tids: list[int] = []
        self.log = workdir / f"tgtd-{ip}.log"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def start(self, timeout_s: float = 5.0) -> None:
        rng = random.Random()
        for _ in range(5):
            self.control = rng.randint(10000, 32000)  # tgtd takes at most 32767
            if Path(f"/var/run/tgtd/socket.{self.control}.lock").exists():
                continue
            if self._try_start(timeout_s):
                return
        raise RuntimeError(f"tgtd did not start on {self.address}; see {self.log}")

    def _try_start(self, timeout_s: float) -> bool:
        log = open(self.log, "wb")  # noqa: SIM115 - the child owns it
        cmd = ["tgtd", "-f", "-C", str(self.control), "--iscsi", f"portal={self.address}"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if "another tgtd" in text or self.proc.poll() is not None:
                self._stop_process()  # the control port is someone else's: no tgtadm
                return False
            if "unable to bind" in text:
                self.stop()  # its control port is ours: stop it properly
                return False
            ok = self._tgtadm("--op", "show", "--mode", "sys", check=False).returncode == 0
            if ok and self._portal_up():
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def _portal_up(self) -> bool:
        try:
            with socket.create_connection((self.ip, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _tgtadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = ["tgtadm", "-C", str(self.control), *args]
        r = subprocess.run(cmd, capture_output=True, timeout=10, check=False)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.decode(errors='replace')}")
        return r

    def add_target(self, tid: int, iqn: str, backing: Path, size_bytes: int = 64 << 20) -> None:
        """Target ``tid`` named ``iqn`` with LUN 1 on ``backing`` (sparse if new)."""
        if not backing.exists():
            with open(backing, "wb") as f:
                f.truncate(size_bytes)
        t = ("--lld", "iscsi", "--tid", str(tid))
        self._tgtadm(*t, "--op", "new", "--mode", "target", "-T", iqn)
        self.tids.append(tid)
        self._tgtadm(*t, "--op", "new", "--mode", "logicalunit", "--lun", "1", "-b", str(backing))
        self._tgtadm(*t, "--op", "bind", "--mode", "target", "-I", "ALL")

    def stop(self) -> None:
        """tgtadm: delete the targets, then the system; wait for the PID (SIGKILL last)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for tid in self.tids:
                self._tgtadm(
                    "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", str(tid),
                    "--force", check=False,
                )  # fmt: skip
            self._tgtadm("--op", "delete", "--mode", "system", check=False)
        self._stop_process()

    def _stop_process(self, wait_s: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
