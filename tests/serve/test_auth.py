"""Keys, the per-minute limiter, the sign-in throttle and the Authorizer's 401/403/429 decisions
(password hashes: test_passwords.py)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from llama2.errors import AuthenticationError, PermissionDeniedError, RateLimitError
from llama2.serve.auth import (KEY_ID_LENGTH, KEY_PREFIX, Authorizer, LoginThrottle, RateLimiter, generate_key,
                               hash_key, key_id_of, mask_secret, verify_key)
from llama2.serve.store import Usage, UsageRecord, User


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_keys_carry_their_public_id_and_hash_to_sha256():
    key_id, secret = generate_key()
    assert key_id.startswith(KEY_PREFIX) and len(key_id) == KEY_ID_LENGTH
    assert key_id_of(secret) == key_id and len(secret) == KEY_ID_LENGTH + 43
    assert generate_key()[1] != secret
    assert len(hash_key(secret)) == 64 and verify_key(secret, hash_key(secret))
    assert not verify_key(secret + "x", hash_key(secret))
    assert key_id_of("sk-other") is None and key_id_of("x" * len(secret)) is None


def test_masked_secrets_never_show_the_whole_key():
    _, secret = generate_key()
    masked = mask_secret(secret)
    assert masked.startswith(secret[:8]) and masked.endswith(secret[-4:]) and secret not in masked
    assert mask_secret("short-secret") == "***"


def test_login_throttle_locks_an_account_then_an_address_for_a_while():
    clock = FakeClock()
    throttle = LoginThrottle(max_per_account=3, max_per_ip=4, lockout_s=900, clock=clock)
    throttle.failed("a@x", "1.1.1.1")
    throttle.failed("a@x", "1.1.1.1")
    throttle.succeeded("a@x")  # a right password starts the account's count again (not the address's)
    throttle.failed("a@x", "1.1.1.1")
    throttle.failed("a@x", "2.2.2.2")
    assert throttle.locked_for("a@x", "3.3.3.3") is None and throttle.locked_for("b@x", "1.1.1.1") is None
    throttle.failed("a@x", "1.1.1.1")  # the account's third failure, the address's fourth
    assert throttle.locked_for("a@x", "3.3.3.3") == 900
    assert throttle.locked_for("b@x", "1.1.1.1") == 900
    assert throttle.locked_for("b@x", "2.2.2.2") is None
    clock.t += 899.5
    assert throttle.locked_for("a@x", "3.3.3.3") == 0.5
    clock.t += 0.5
    assert throttle.locked_for("a@x", "3.3.3.3") is None and throttle.locked_for("b@x", "1.1.1.1") is None


def test_login_throttle_counts_failures_within_the_window_only():
    clock = FakeClock()
    throttle = LoginThrottle(max_per_account=3, max_per_ip=100, lockout_s=60, clock=clock)
    for _ in range(2):
        throttle.failed("a@x", "ip")
    clock.t += 61  # those two have aged out
    throttle.failed("a@x", "ip")
    throttle.failed("a@x", "ip")
    assert throttle.locked_for("a@x", "ip") is None
    throttle.failed("a@x", "ip")
    assert throttle.locked_for("a@x", "ip") == 60


def test_rate_limiter_slides_a_60_second_window():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    assert limiter.acquire("k", 2) is None
    clock.t += 10
    assert limiter.acquire("k", 2) is None
    clock.t += 10
    assert limiter.acquire("k", 2) == pytest.approx(40.0)  # the first request leaves the window in 40 s
    assert limiter.acquire("other", 2) is None  # per key
    clock.t += 40
    assert limiter.acquire("k", 2) is None
    assert limiter.acquire("k", 2) == pytest.approx(10.0)  # refused requests did not count


def test_rate_limiter_is_thread_safe():
    limiter = RateLimiter(clock=FakeClock())
    admitted = []

    def hammer() -> None:
        admitted.extend(limiter.acquire("k", 50) is None for _ in range(100))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 50


@pytest.fixture
def user_store(sqlite_store):
    sqlite_store.add_user("a@example.com")
    return sqlite_store


def test_authenticate_returns_the_key(user_store):
    info, secret = user_store.create_key("a@example.com", name="app")
    assert Authorizer(user_store).authenticate(secret) == info


@pytest.mark.parametrize("presented, message", [
    (None, "You didn't provide an API key"),
    ("", "You didn't provide an API key"),
    ("sk-l2-wrongwrongwrongwrongwrongwrongwrongwrongwrongwrong1", r"Incorrect API key provided: sk-l2-wr\*\*\*ong1\."),
])
def test_missing_and_unknown_keys_are_401(user_store, presented, message):
    with pytest.raises(AuthenticationError, match=message) as error:
        Authorizer(user_store).authenticate(presented)
    assert error.value.status == 401 and (not presented or presented not in str(error.value))


def test_revoked_keys_and_disabled_users_are_401(user_store):
    info, secret = user_store.create_key("a@example.com")
    user_store.revoke_key(info.id)
    with pytest.raises(AuthenticationError, match=f"API key {info.id} has been revoked") as error:
        Authorizer(user_store).authenticate(secret)
    assert secret not in str(error.value)
    _, other = user_store.create_key("a@example.com")
    with user_store._sessions.begin() as session:
        session.get(User, user_store.get_user("a@example.com").id).disabled = True
    with pytest.raises(AuthenticationError, match=r"\(a@example.com\) is disabled"):
        Authorizer(user_store).authenticate(other)


def test_a_model_outside_the_keys_list_is_403(user_store):
    info, _ = user_store.create_key("a@example.com", models=["llama", "gpt-4o"])
    authorizer = Authorizer(user_store)
    authorizer.authorize(info, "llama")
    with pytest.raises(PermissionDeniedError, match="may not use model 'claude'; it may use: llama, gpt-4o") as error:
        authorizer.authorize(info, "claude")
    assert error.value.status == 403
    unrestricted, _ = user_store.create_key("a@example.com")
    authorizer.authorize(unrestricted, "claude")


def test_past_the_rpm_is_429_with_retry_after(user_store):
    clock = FakeClock()
    info, _ = user_store.create_key("a@example.com", rpm=3)
    authorizer = Authorizer(user_store, clock=clock)
    for _ in range(3):
        authorizer.authorize(info, "m")
        clock.t += 5
    with pytest.raises(RateLimitError, match="limited to 3 requests per minute") as error:
        authorizer.authorize(info, "m")
    assert error.value.status == 429 and error.value.retry_after_s == pytest.approx(45.0)
    clock.t += 45
    authorizer.authorize(info, "m")


def test_past_the_tokens_per_day_is_429_until_utc_midnight(store):
    store.add_user("a@example.com")
    info, _ = store.create_key("a@example.com", tokens_per_day=100)
    now = datetime.now(timezone.utc)
    authorizer = Authorizer(store, now=lambda: now)
    with store._sessions.begin() as session:  # yesterday's tokens do not count today
        session.add(Usage(created_at=now - timedelta(days=1), key_id=info.id, model="m", endpoint="/v1/x", status=200,
                          prompt_tokens=1000))
    store.record_usage(UsageRecord("a@example.com", info.id, "m", "/v1/chat/completions", 200, 60, 39))
    authorizer.authorize(info, "m")
    store.record_usage(UsageRecord("a@example.com", info.id, "m", "/v1/chat/completions", 200, 0, 1))
    with pytest.raises(RateLimitError, match="has used 100 of its 100 tokens per day") as error:
        authorizer.authorize(info, "m")
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert error.value.retry_after_s == pytest.approx((midnight - now).total_seconds())
