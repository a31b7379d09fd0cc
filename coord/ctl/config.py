"""Which coord endpoints to talk to, shared by ``coordctl`` and its TUI (``coordctl top``).

The first of these that is given wins:

1. ``--endpoints HOST:PORT,HOST:PORT`` (the ``arg`` of ``resolve_endpoints``);
2. ``$COORD_ENDPOINTS``, the same comma-separated form;
3. a TOML config file with ``endpoints = ["127.0.0.1:7101", ...]`` (a list, or
   one comma-separated string): ``--config FILE`` (``config_path``), else
   ``$COORD_CONFIG``, else ``~/.config/coord/coordctl.toml`` if it exists;
4. the local cluster of ``coord cluster up``: ``.coord/cluster.json`` in the
   current directory (each member ``ID=PEER/API``: its API address is used);
5. ``127.0.0.1:7101``, the first node of a default ``coord cluster up``.

An endpoint is ``HOST:PORT`` (IPv6 as ``[ADDR]:PORT``); an ``http://`` prefix
and a trailing slash are accepted and dropped. The result is a list of
``HOST:PORT`` strings (what ``coord.client.Client`` takes), duplicates removed,
in the given order. Bad input raises ``UsageError`` with a message naming it and
where it came from.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_ENDPOINT = "127.0.0.1:7101"
USER_CONFIG = Path("~/.config/coord/coordctl.toml")
LOCAL_CLUSTER = Path(".coord/cluster.json")


class UsageError(Exception):
    """Bad command-line input or configuration (coordctl exits 2)."""


def resolve_endpoints(arg: str | None, config_path: str | None = None) -> list[str]:
    """The endpoints to use, as ``HOST:PORT`` strings (see the module's docstring)."""
    return resolve(arg, config_path)[0]


def resolve(arg: str | None, config_path: str | None = None) -> tuple[list[str], str]:
    """The endpoints and where they came from (for messages: "from --endpoints", ...)."""
    if arg is not None:
        return parse_list(arg, "--endpoints"), "--endpoints"
    env = os.environ.get("COORD_ENDPOINTS")
    if env:
        return parse_list(env, "$COORD_ENDPOINTS"), "$COORD_ENDPOINTS"
    path, explicit = _config_file(config_path)
    if path is not None:
        got = _from_config(path, explicit)
        if got:
            return got, str(path)
    if LOCAL_CLUSTER.is_file():
        return _from_cluster_file(LOCAL_CLUSTER), str(LOCAL_CLUSTER)
    return [DEFAULT_ENDPOINT], "the default"


def _config_file(config_path: str | None) -> tuple[Path | None, bool]:
    if config_path is not None:
        return Path(config_path), True
    env = os.environ.get("COORD_CONFIG")
    if env:
        return Path(env), True
    user = USER_CONFIG.expanduser()
    return (user, False) if user.is_file() else (None, False)


def _from_config(path: Path, explicit: bool) -> list[str]:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise UsageError(f"config file {path} does not exist") from e
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}") from e
    raw = doc.get("endpoints")
    where = f"'endpoints' in {path}"
    if raw is None:
        if explicit:
            raise UsageError(f"config file {path} has no 'endpoints'")
        return []
    if isinstance(raw, str):
        return parse_list(raw, where)
    if not isinstance(raw, list) or not all(isinstance(e, str) for e in raw):
        raise UsageError(f'{where} must be a list of "HOST:PORT" strings')
    return _dedupe([parse_endpoint(e, where) for e in raw], where)


def _from_cluster_file(path: Path) -> list[str]:
    where = f"the members in {path}"
    try:
        doc: Any = json.loads(path.read_text())
        members = doc["members"]
        apis = [m.split("/", 1)[1] for m in members if isinstance(m, str) and "/" in m]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"cannot read the local cluster's {path}: {e}") from e
    if not apis:
        raise UsageError(f"no member in {path} has an API address (ID=PEER/API)")
    return _dedupe([parse_endpoint(a, where) for a in apis], where)


def parse_list(text: str, where: str) -> list[str]:
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise UsageError(f"{where}: no endpoint given (HOST:PORT,HOST:PORT,...)")
    return _dedupe([parse_endpoint(p, where) for p in parts if p], where)


def parse_endpoint(text: str, where: str) -> str:
    """``HOST:PORT`` from ``HOST:PORT`` or ``http://HOST:PORT[/]``; UsageError otherwise."""
    raw = text.strip()
    e = raw.removeprefix("http://").rstrip("/")
    host, sep, port = e.rpartition(":")
    ok = (
        sep == ":"
        and bool(host)
        and "/" not in e
        and not any(c.isspace() for c in e)
        and port.isdigit()
        and 0 < int(port) < 65536
        and (":" not in host or (host.startswith("[") and host.endswith("]")))
    )
    if not ok:
        raise UsageError(f"{where}: bad endpoint {raw!r} (want HOST:PORT, e.g. {DEFAULT_ENDPOINT})")
    return e


def _dedupe(endpoints: list[str], where: str) -> list[str]:
    out: list[str] = []
    for e in endpoints:
        if e not in out:
            out.append(e)
    if not out:
        raise UsageError(f"{where}: no endpoint given")
    return out
