"""pttd.ratelimit: the token bucket and the failure window the server and the device share."""

from __future__ import annotations

from pttd.ratelimit import FailureLog, LogThrottle, RateLimiter


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    limit = RateLimiter(rate=10.0, burst=3.0, now=0.0)
    assert [limit.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert not limit.allow(0.05)  # half a token back
    assert limit.allow(0.1)
    assert [limit.allow(10.0) for _ in range(4)] == [True, True, True, False]  # never over burst


def test_rate_zero_is_unlimited() -> None:
    limit = RateLimiter(rate=0.0, burst=0.0, now=0.0)
    assert all(limit.allow(0.0) for _ in range(1000))


def test_failure_log_blocks_within_the_window_and_forgets_after() -> None:
    failures = FailureLog(limit=2, window=60.0)
    assert not failures.blocked("10.0.0.1", 0.0)
    failures.record("10.0.0.1", 0.0)
    failures.record("10.0.0.1", 1.0)
    assert failures.blocked("10.0.0.1", 2.0) and not failures.blocked("10.0.0.2", 2.0)
    assert not failures.blocked("10.0.0.1", 61.0)  # the first one left the window
    assert not failures.blocked("10.0.0.1", 62.0) and len(failures) == 0
    for i in range(100):  # one try from each of many addresses: swept once a window
        failures.record(f"10.1.0.{i}", 100.0)
    failures.record("10.2.0.1", 200.0)
    assert len(failures) == 1


def test_log_throttle_lets_a_burst_through_then_counts() -> None:
    throttle = LogThrottle(burst=3, window=10.0)
    assert [throttle.allow("junk", 0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert throttle.allow("other", 1.0) == 0  # causes are counted apart
    assert throttle.allow("junk", 9.9) is None
    assert throttle.allow("junk", 10.0) == 3  # the next window's first line tells the held ones
    assert throttle.allow("junk", 10.1) == 0
