"""API keys, scopes and rate limits: the one check every service's API makes (shared/auth.py)."""

from __future__ import annotations

import pytest

from shared.auth import SCOPES, Gate, Key, KeyCache, KeyStore, hash_api_key, new_api_key, parse_scopes
from shared.problems import ProblemError
from shared.ratelimit import RateLimiter, TokenBucket


class FakeKeys(KeyCache):
    """The real cache with its keys given, no database behind it."""

    def __init__(self, keys: dict[str, Key]) -> None:
        super().__init__(KeyStore.__new__(KeyStore), refresh_s=60)
        self._keys = {hash_api_key(secret): key for secret, key in keys.items()}


KEYS = {
    "nps_app": Key("app", frozenset({"responses:write"})),
    "nps_reader": Key("dash", frozenset({"scores:read", "alerts:read"})),
    "nps_root": Key("ops", frozenset({"admin"})),
}


def refused(gate: Gate, authorization: str | None, scope: str) -> ProblemError:
    with pytest.raises(ProblemError) as info:
        gate(authorization, scope)  # type: ignore[arg-type]
    return info.value


def test_no_key_or_an_unknown_key_is_401_with_the_scheme_to_use() -> None:
    gate = Gate(FakeKeys(KEYS))
    for authorization in (None, "", "Basic nps_app", "Bearer", "Bearer nps_nobody"):
        problem = refused(gate, authorization, "scores:read")
        assert problem.status == 401 and problem.headers == {"WWW-Authenticate": "Bearer"}
        assert problem.problem.code in ("missing_api_key", "invalid_api_key")


def test_a_key_without_the_scope_is_403_and_one_with_it_gets_its_name_back() -> None:
    gate = Gate(FakeKeys(KEYS))
    problem = refused(gate, "Bearer nps_app", "scores:read")
    assert (problem.status, problem.problem.code) == (403, "insufficient_scope")
    assert "scores:read" in problem.problem.message
    assert gate("Bearer nps_reader", "scores:read") == "dash"
    assert gate("bearer nps_app", "responses:write") == "app"  # the scheme is case-insensitive
    assert refused(gate, "Bearer nps_reader", "followups:read").status == 403


@pytest.mark.parametrize("scope", SCOPES)
def test_admin_grants_every_scope(scope: str) -> None:
    assert Gate(FakeKeys(KEYS))("Bearer nps_root", scope) == "ops"  # type: ignore[arg-type]


def test_the_rate_limit_is_per_key_after_the_scope_check() -> None:
    gate = Gate(FakeKeys(KEYS), RateLimiter(rate=1, burst=1))
    assert gate("Bearer nps_reader", "scores:read") == "dash"
    problem = refused(gate, "Bearer nps_reader", "scores:read")
    assert problem.status == 429 and int(problem.headers["Retry-After"]) >= 1
    assert gate("Bearer nps_app", "responses:write") == "app"


def test_unknown_scopes_are_named() -> None:
    assert parse_scopes(["scores:read", "admin"]) == ("scores:read", "admin")
    with pytest.raises(ValueError, match="scores:write"):
        parse_scopes(["scores:write"])


def test_api_keys_are_random_and_only_their_hash_is_kept() -> None:
    a, b = new_api_key(), new_api_key()
    assert a != b and a.startswith("nps_") and len(a) > 40
    assert hash_api_key(a) == hash_api_key(a) != hash_api_key(b)
    assert a not in hash_api_key(a)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, tokens=3, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)  # one token comes back every 0.1 s
    assert bucket.take(0.1) == 0.0
    assert bucket.take(10.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # refills only up to the burst


def test_rate_limiter_is_per_key_and_says_when_to_retry() -> None:
    limiter = RateLimiter(rate=1, burst=2)
    assert limiter.retry_after("app-a", 0.0) == 0
    assert limiter.retry_after("app-a", 0.0) == 0
    assert limiter.retry_after("app-a", 0.0) == 1  # Retry-After in whole seconds, at least 1
    assert limiter.retry_after("app-b", 0.0) == 0  # another key has its own bucket
    assert limiter.retry_after("app-a", 1.0) == 0
    assert RateLimiter(rate=0, burst=1).retry_after("x", 0.0) == 0  # rate 0 turns the limit off


def test_more_than_one_authorization_header_is_refused_whichever_comes_first() -> None:
    gate = Gate(FakeKeys(KEYS))
    for pair in (["Bearer nps_app", "Bearer nps_root"], ["Bearer nps_root", "Bearer nps_app"]):
        problem = refused(gate, pair, "responses:write")  # type: ignore[arg-type]
        assert (problem.status, problem.problem.code) == (401, "duplicate_authorization")
    assert gate(["Bearer nps_app"], "responses:write") == "app"
