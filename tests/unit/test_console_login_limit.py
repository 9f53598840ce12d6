"""The console's login rate limit, on an injected clock."""

from __future__ import annotations

from siteclock.gateway.console.login_limit import LoginLimit


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_name_is_blocked_after_its_failures_until_the_window_passes() -> None:
    clock = Clock()
    limit = LoginLimit(failures=3, window_s=60, clock=clock)
    for _ in range(3):
        assert not limit.blocked("an", "10.0.0.1")
        limit.failed("an", "10.0.0.1")
        clock.now += 1
    assert limit.blocked("an", "10.0.0.9")  # from anywhere
    assert 0 < limit.retry_after("an", "10.0.0.9") <= 60
    assert not limit.blocked("bert", "10.0.0.9")
    clock.now += 58  # the first failure leaves the window
    assert not limit.blocked("an", "10.0.0.1")


def test_one_address_trying_many_names_is_blocked_too() -> None:
    clock = Clock()
    limit = LoginLimit(failures=3, window_s=60, address_failures=5, clock=clock)
    for i in range(5):
        limit.failed(f"user{i}", "10.0.0.1")
    assert limit.blocked("someone-else", "10.0.0.1")
    assert not limit.blocked("someone-else", "10.0.0.2")


def test_a_success_clears_the_names_count() -> None:
    limit = LoginLimit(failures=2, window_s=60, clock=Clock())
    limit.failed("an", "10.0.0.1")
    limit.succeeded("an")
    limit.failed("an", "10.0.0.1")
    assert not limit.blocked("an", "10.0.0.1")
