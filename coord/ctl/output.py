"""How coordctl prints: rich tables, or the API's own JSON / YAML documents; times and sizes.

``-o table`` (the default) is for people: tables, relative times ("12 s ago",
"in 3 s") and human sizes ("10 GiB"). ``-o json`` and ``-o yaml`` print the
API's answer as it came (times in ms since the epoch, sizes in bytes), so
scripts get every field; streams (``kv watch``) print one JSON object per line,
or one YAML document per event.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .config import UsageError

FORMATS = ("table", "json", "yaml")
PROG = "coordctl"


class Output:
    def __init__(self, fmt: str = "table") -> None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r} (one of {', '.join(FORMATS)})")
        self.fmt = fmt

    @property
    def structured(self) -> bool:
        return self.fmt != "table"

    def console(self) -> Console:
        # Looked up at every call: tests (and redirections) swap sys.stdout.
        tty = sys.stdout.isatty()
        return Console(file=sys.stdout, highlight=False, width=None if tty else 200)

    # ---- documents -----------------------------------------------------------------------

    def doc(self, doc: Any, render: Callable[[], None] | None = None) -> None:
        """The answer as JSON or YAML, or ``render()`` (default: a field table) for people."""
        if self.fmt == "json":
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        elif self.fmt == "yaml":
            sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        elif render is not None:
            render()
        else:
            self.fields(doc)

    def event(self, doc: Any, text: str) -> None:
        """One item of a stream: a JSON line, a YAML document, or ``text``."""
        if self.fmt == "json":
            sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
        elif self.fmt == "yaml":
            sys.stdout.write("---\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    # ---- for people ----------------------------------------------------------------------

    def line(self, text: str) -> None:
        sys.stdout.write(text + "\n")

    def table(
        self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
    ) -> None:
        t = Table(
            box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, show_edge=False
        )
        for c in columns:
            t.add_column(c, overflow="fold")
        for row in rows:
            t.add_row(*(Text(cell(v)) for v in row))
        self.console().print(t)

    def fields(self, doc: dict[str, Any] | Sequence[tuple[str, Any]]) -> None:
        """Name / value lines (nested values as compact JSON)."""
        pairs = list(doc.items()) if isinstance(doc, dict) else list(doc)
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(style="bold")
        t.add_column(overflow="fold")
        for k, v in pairs:
            t.add_row(Text(f"{k}:"), Text(cell(v)))
        self.console().print(t)


def cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def error(message: str) -> None:
    """One line on stderr: ``coordctl: message``."""
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


# ---- times -------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    s = abs(seconds)
    if s < 60:
        return f"{s:.0f} s" if s >= 10 or s == int(s) else f"{s:.1f} s"
    if s < 3600:
        return f"{s // 60:.0f} min"
    if s < 86400:
        h, rest = divmod(s, 3600)
        return f"{h:.0f} h {rest // 60:.0f} min" if rest >= 60 else f"{h:.0f} h"
    return f"{s // 86400:.0f} d"


def ago(ms: float | None, now: float | None = None) -> str:
    """A wall-clock time in ms since the epoch, relative to now: "12 s ago", "in 3 s"."""
    if ms is None:
        return "-"
    delta = (time.time() if now is None else now) - ms / 1000
    if abs(delta) < 0.5:
        return "now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(delta)}"


def within(seconds: float | None) -> str:
    """A countdown: "in 3 s" (or "expired")."""
    if seconds is None:
        return "-"
    return f"in {duration(seconds)}" if seconds > 0 else "expired"


# ---- sizes -------------------------------------------------------------------------------

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)\s*\Z", re.IGNORECASE)


def size(n: int | float | None) -> str:
    """Bytes for people, in powers of 1024: "10 GiB", "1.5 TiB", "512 B"."""
    if n is None:
        return "-"
    v, unit = float(n), 0
    while abs(v) >= 1024 and unit < len(_UNITS) - 1:
        v /= 1024
        unit += 1
    if unit == 0:
        return f"{int(v)} B"
    return f"{v:.0f} {_UNITS[unit]}" if v == math.floor(v) else f"{v:.1f} {_UNITS[unit]}"


def parse_size(text: str) -> int:
    """ "10GiB", "10G", "1.5 TiB", "512MiB", "4096" (bytes) -> bytes; powers of 1024,
    except "GB", "TB", ... which are powers of 1000."""
    m = _SIZE.match(text)
    if m is None:
        raise UsageError(f"bad size {text!r} (e.g. 10GiB, 512MiB, 1T, or bytes)")
    num, prefix, suffix = m.group(1), m.group(2).upper(), m.group(3)
    if not prefix and suffix.lower() not in ("", "b"):
        raise UsageError(f"bad size {text!r} (e.g. 10GiB, 512MiB, 1T, or bytes)")
    power = "_KMGTP".index(prefix) if prefix else 0
    base = 1000 if suffix.upper() == "B" and prefix else 1024
    value = float(num) * base**power
    if value != int(value):
        raise UsageError(f"bad size {text!r}: not a whole number of bytes")
    return int(value)
