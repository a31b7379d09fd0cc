"""Did an HTTP request leave this process? The one fact that makes a failure definite.

A write that never reached a node was certainly not applied; one that did may
have been. aiohttp blurs the two: when a connection breaks mid-request it
sends a PUT, DELETE or GET once more on a new connection, and if *that* cannot
connect, the error says "cannot connect" (``ClientConnectorError``) although
the first send went out and may have been applied (the real-process harness
caught a node killed right after taking a PUT this way). So every request
carries a ``Sent`` marker that a trace hook sets the moment its headers are
written, and a failure counts as "never sent" only while the marker is unset.

    session = aiohttp.ClientSession(trace_configs=[sent_trace()])
    mark = Sent()
    async with session.request(..., trace_request_ctx=mark) as r: ...
    except aiohttp.ClientConnectorError: definite = not mark.sent
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp


class Sent:
    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


async def _headers_sent(_session: Any, ctx: SimpleNamespace, _params: Any) -> None:
    mark = ctx.trace_request_ctx
    if isinstance(mark, Sent):
        mark.sent = True


def sent_trace() -> aiohttp.TraceConfig:
    """A trace config that sets a request's ``Sent`` marker when its headers go out."""
    tc = aiohttp.TraceConfig()
    tc.on_request_headers_sent.append(_headers_sent)
    return tc
