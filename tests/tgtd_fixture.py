"""What the tests with a real tgtd and libiscsi share: why they cannot run here, if they
cannot, a free loopback address, and iscsi-perf with its progress lines time-stamped.
tgtd itself is driven by the product's own driver (target/tgt.py)."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable

from target.tgt import unavailable

LIBISCSI = ("iscsi-inq", "iscsi-ls", "iscsi-readcapacity16", "iscsi-perf")


def skip_reason() -> str | None:
    """Why tests with real tgtd and libiscsi cannot run here, or None."""
    why = unavailable()
    if why is not None:
        return why
    missing = [t for t in LIBISCSI if shutil.which(t) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install libiscsi-bin)"
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


class Perf:
    """A bounded iscsi-perf (``-x`` reconnects, errors ignored), its per-second progress
    lines time-stamped as they come. ``wrap`` runs it elsewhere (``ip netns exec``)."""

    def __init__(
        self,
        url: str,
        initiator: str,
        seconds: int,
        wrap: Callable[[list[str]], list[str]] = lambda argv: argv,
    ) -> None:
        # Unbuffered: into a pipe, its progress lines would all come at the end.
        cmd = ["stdbuf", "-o0", "iscsi-perf", "-i", initiator, "-t", str(seconds), "-x", "60"]
        self.proc = subprocess.Popen(
            wrap([*cmd, "-n", url]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.lines: list[tuple[float, int]] = []  # (monotonic, iops current)
        self.text: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        buf = b""
        while chunk := out.read1(4096):  # type: ignore[attr-defined]
            buf += chunk
            *done, buf = buf.replace(b"\r", b"\n").split(b"\n")
            if b"busy" in buf:  # a progress line is whole once it says "busy N"
                done.append(buf)
                buf = b""
            for raw in done:
                line = raw.decode(errors="replace").strip()
                if line:
                    self.text.append(line)
                if "iops current" in line:
                    n = int(line.split("iops current", 1)[1].split()[0])
                    self.lines.append((time.monotonic(), n))

    def finish(self, timeout: float, interrupt: bool = False) -> None:
        """Wait for its end (``interrupt``: end it now); killed by PID if it hangs."""
        for _ in range(2 if interrupt else 0):  # a second signal ends it at once
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                time.sleep(0.1)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
