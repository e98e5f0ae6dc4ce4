"""The per-peer token buckets (agent/core/rate_limit.py): pure, time passed in."""

from __future__ import annotations

import pytest

from agent.adapters.limits import LOG_EVERY_S, ThrottledLog
from agent.core.rate_limit import RateLimiter


def test_a_peer_gets_its_burst_then_the_rate():
    limiter = RateLimiter(rate_per_s=10.0, burst=5)
    assert [limiter.on_call("p", 0.0).allowed for _ in range(6)] == [True] * 5 + [False]
    refused = limiter.on_call("p", 0.0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.1)
    assert limiter.on_call("p", 0.1).allowed  # one token back after 1/rate
    assert not limiter.on_call("p", 0.1).allowed
    assert sum(limiter.on_call("p", 0.1 + i * 0.01).allowed for i in range(1, 101)) == 10  # 1 s: rate x 1 s


def test_peers_have_separate_buckets():
    limiter = RateLimiter(rate_per_s=1.0, burst=1)
    assert limiter.on_call("a", 0.0).allowed and not limiter.on_call("a", 0.0).allowed
    assert limiter.on_call("b", 0.0).allowed


def test_an_idle_peer_refills_only_up_to_its_burst():
    limiter = RateLimiter(rate_per_s=100.0, burst=3)
    assert all(limiter.on_call("p", 0.0).allowed for _ in range(3))
    assert [limiter.on_call("p", 3600.0).allowed for _ in range(4)] == [True, True, True, False]


def test_a_clock_that_steps_back_adds_no_tokens():
    limiter = RateLimiter(rate_per_s=1.0, burst=1)
    assert limiter.on_call("p", 100.0).allowed
    assert not limiter.on_call("p", 50.0).allowed
    assert not limiter.on_call("p", 100.5).allowed and limiter.on_call("p", 101.0).allowed


def test_the_table_of_peers_is_bounded_dropping_the_least_recent():
    limiter = RateLimiter(rate_per_s=1.0, burst=1, peers_max=2)
    for peer in ("a", "b"):
        assert limiter.on_call(peer, 0.0).allowed
    assert not limiter.on_call("a", 0.0).allowed  # a is now the most recent
    assert limiter.on_call("c", 0.0).allowed  # drops b
    assert len(limiter) == 2
    assert limiter.on_call("b", 0.0).allowed  # b starts over with a full bucket (and drops a)
    assert not limiter.on_call("c", 0.0).allowed


@pytest.mark.parametrize("rate,burst,peers", [(0.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0), (-1.0, 1, 1)])
def test_nonsense_limits_are_refused(rate, burst, peers):
    with pytest.raises(ValueError):
        RateLimiter(rate, burst, peers)


def test_refusals_are_logged_once_per_key_and_interval_saying_how_many_were_left_out(caplog):
    now = [100.0]
    throttled = ThrottledLog(keys_max=2, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="shoal.limits"):
        for _ in range(5):
            throttled.warning("a", "refused %s", "a")
        throttled.warning("b", "refused %s", "b")
        now[0] += LOG_EVERY_S
        throttled.warning("a", "refused %s", "a")
    assert [r.getMessage() for r in caplog.records] == \
        ["refused a", "refused b", "refused a; 4 more refused since the last line"]
