"""Prometheus text exposition of a node's vital signs (no client library needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .node import Node


def render(node: Node) -> str:
    out: list[str] = []

    def gauge(name: str, help_: str, value: float, labels: str = "") -> None:
        if not any(line.startswith(f"# HELP {name} ") for line in out):
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} gauge")
        out.append(f"{name}{labels} {value}")

    core = node.core
    if core is not None:
        st = core.status()
        gauge("coord_term", "Current Raft term.", int(st.term))
        gauge("coord_is_leader", "1 if this node leads.", int(node.is_leader))
        gauge("coord_commit_index", "Highest log index known committed.", int(st.commit))
        gauge("coord_applied_index", "Highest log index applied to the store.", int(st.applied))
        gauge("coord_store_revision", "Store revision.", node.sm.kv.revision)
        gauge("coord_store_keys", "Keys in the store.", node.sm.kv.count())
        for p in st.peers:
            if p.id != node.id:
                gauge(
                    "coord_peer_lag_entries",
                    "Entries a peer is behind the leader.",
                    int(st.last_index - p.match),
                    f'{{peer="{p.id}"}}',
                )
    m = node.metrics
    out.append("# HELP coord_leader_changes_total Times this node became leader.")
    out.append("# TYPE coord_leader_changes_total counter")
    out.append(f"coord_leader_changes_total {m['leader_changes']}")
    out.append("# HELP coord_proposals_total Proposals by outcome.")
    out.append("# TYPE coord_proposals_total counter")
    for outcome in ("committed", "rejected", "unknown"):
        out.append(f'coord_proposals_total{{outcome="{outcome}"}} {m[f"proposals_{outcome}"]}')
    out.append("# HELP coord_batched_writes_total Writes proposed in an entry shared with others.")
    out.append("# TYPE coord_batched_writes_total counter")
    out.append(f"coord_batched_writes_total {m['batched_writes']}")
    tr = node.transport
    if tr is not None:
        st_ = tr.stats
        counters = (
            ("coord_peer_frames_sent_total", "Frames sent to peers.", st_.frames_sent),
            (
                "coord_peer_frames_received_total",
                "Frames received from peers.",
                st_.frames_received,
            ),
            (
                "coord_peer_messages_dropped_total",
                "Messages dropped (queue full, link broken).",
                st_.messages_dropped,
            ),
        )
        for name, help_, value in counters:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} counter")
            out.append(f"{name} {value}")
        out.append("# HELP coord_peer_rejected_total Inbound peer frames refused, by reason.")
        out.append("# TYPE coord_peer_rejected_total counter")
        for reason in sorted(st_.rejected):
            out.append(f'coord_peer_rejected_total{{reason="{reason}"}} {st_.rejected[reason]}')
    h = node.fsync_hist
    out.append("# HELP coord_fsync_seconds Time to make a Ready durable (WAL write and fdatasync).")
    out.append("# TYPE coord_fsync_seconds histogram")
    for b, n in zip(h.bounds, h.counts, strict=True):
        out.append(f'coord_fsync_seconds_bucket{{le="{b}"}} {n}')
    out.append(f'coord_fsync_seconds_bucket{{le="+Inf"}} {h.total}')
    out.append(f"coord_fsync_seconds_sum {h.sum:.6f}")
    out.append(f"coord_fsync_seconds_count {h.total}")
    return "\n".join(out) + "\n"
