"""The agent's VIP rule: serve only while the lease is fresh by our clock and the map
says the VIP is ours; stop before any leader, on any clock within the drift bound, may
move it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from target.vip import Assignment, VipHolder


def holder() -> VipHolder:
    h = VipHolder("n1", ttl_s=3.0, rho=0.1, margin_s=0.2)
    h.registered(revision=2)
    h.map_seen(3, [Assignment("127.0.10.1", "n1", 3), Assignment("127.0.10.2", "n2", 1)])
    return h


def test_serves_own_vips_only_while_fresh() -> None:
    h = holder()
    assert h.serving(0.0) == {}  # no acknowledged heartbeat yet
    h.heartbeat_acked(sent_at=10.0, revision=3, owned={"127.0.10.1": 3})
    assert h.serving(10.5) == {"127.0.10.1": 3}
    # 3 x 0.9 - 0.2 = 2.5 s after the *send*, however late the answer came
    assert h.serving(12.49) == {"127.0.10.1": 3}
    assert h.serving(12.5) == {}


def test_older_ack_does_not_extend_and_lease_loss_stops_at_once() -> None:
    h = holder()
    h.heartbeat_acked(sent_at=10.0, revision=3, owned={"127.0.10.1": 3})
    h.heartbeat_acked(sent_at=9.0, revision=3, owned={"127.0.10.1": 3})  # a late answer
    assert h.serve_until() == pytest.approx(12.5)
    h.lease_lost()
    assert h.serving(10.1) == {}


def test_map_change_moves_the_vip_away() -> None:
    h = holder()
    h.heartbeat_acked(sent_at=10.0, revision=3, owned={"127.0.10.1": 3})
    h.map_seen(5, [Assignment("127.0.10.1", "n2", 5)])
    assert h.serving(10.1) == {}


def test_release_in_progress_means_stop() -> None:
    h = holder()
    h.heartbeat_acked(sent_at=10.0, revision=3, owned={"127.0.10.1": 3})
    h.map_seen(4, [Assignment("127.0.10.1", "n1", 4, releasing=True)])
    assert h.serving(10.1) == {}


def test_a_late_answer_never_resurrects_a_vip() -> None:
    h = holder()
    h.heartbeat_acked(sent_at=10.0, revision=6, owned={})  # moved away at revision 5
    # The answer to an earlier heartbeat, computed at revision 4, arrives late.
    h.heartbeat_acked(sent_at=9.9, revision=4, owned={"127.0.10.1": 3})
    assert h.serving(10.2) == {}


def test_views_from_before_our_registration_are_ignored() -> None:
    h = VipHolder("n1", ttl_s=3.0, rho=0.1, margin_s=0.2)
    h.registered(revision=10)
    # An older agent of this node owned it at revision 8: not us.
    h.map_seen(8, [Assignment("127.0.10.1", "n1", 7)])
    h.heartbeat_acked(sent_at=1.0, revision=11, owned={})
    assert h.serving(1.1) == {}
    h.map_seen(12, [Assignment("127.0.10.1", "n1", 12)])
    assert h.serving(1.2) == {"127.0.10.1": 12}


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        VipHolder("n1", ttl_s=1.0, rho=0.5, margin_s=0.6)
    with pytest.raises(ValueError):
        VipHolder("n1", ttl_s=1.0, rho=1.0, margin_s=0.0)


@given(
    drift=st.floats(0.0, 0.2),
    holder_rate=st.floats(0.0, 1.0),
    leader_rate=st.floats(0.0, 1.0),
    ttl=st.floats(0.5, 30.0),
    send=st.floats(0.0, 1000.0),
)
def test_holder_stops_before_any_leader_may_move(
    drift: float, holder_rate: float, leader_rate: float, ttl: float, send: float
) -> None:
    # Clocks tick at rates in [1 - d, 1 + d] of real time; rho bounds how much more one
    # clock can measure than another over the same interval: 1 - (1 - d) / (1 + d).
    lo, hi = 1 - drift, 1 + drift
    r_h = lo + holder_rate * (hi - lo)
    r_l = lo + leader_rate * (hi - lo)
    rho = 1 - lo / hi
    h = VipHolder("n1", ttl_s=ttl, rho=rho, margin_s=0.0)
    # Holder: its clock reads local = real * r_h; it sent at real time `send`.
    h.heartbeat_acked(sent_at=send * r_h, revision=1, owned={"127.0.10.1": 1})
    stop_real = (send * r_h + h.safe_s) / r_h
    # Leader: restarted the countdown no earlier than the send; TTL by its clock.
    expiry_real = send + ttl / r_l
    assert stop_real <= expiry_real + 1e-9
