"""API keys, scopes and rate limits: the one check every service's API makes (shared/auth.py)."""

from __future__ import annotations

import pytest

from shared import auth
from shared.auth import (
    SCOPES,
    Gate,
    Key,
    KeyCache,
    KeyStore,
    Publishable,
    hash_api_key,
    new_api_key,
    parse_origin,
    parse_scopes,
)
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


def test_a_publishable_key_does_only_the_public_operations_and_skips_the_per_key_limit() -> None:
    page = Key("web", frozenset(), "publishable", Publishable(frozenset({"https://app.example.com"})))
    gate = Gate(FakeKeys({**KEYS, "nps_pk_page": page}), RateLimiter(rate=1, burst=1))
    for scope in SCOPES:
        problem = refused(gate, "Bearer nps_pk_page", scope)
        assert (problem.status, problem.problem.code) == (403, "insufficient_scope")
        assert "publishable" in problem.problem.message
    for _ in range(3):  # a whole site's traffic: its limits are per address and per person instead
        assert gate.key("Bearer nps_pk_page", "responses:write", public=True) is page
    assert gate.keys.publishable_origins() == frozenset()  # loaded by `load`, not by this fake
    # A secret key on a public operation still needs its scope.
    assert refused(gate, "Bearer nps_reader", "responses:write").status == 403


def test_a_secret_key_never_reads_as_publishable(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["pk_looks_public", "pk_again", "plain_token"])
    monkeypatch.setattr(auth.secrets, "token_urlsafe", lambda _: next(tokens))
    assert new_api_key() == "nps_plain_token"


def test_origins_are_exact_and_without_paths() -> None:
    assert parse_origin("https://App.Example.com") == "https://app.example.com"
    assert parse_origin("http://localhost:5173") == "http://localhost:5173"
    for bad in ("*", "https://app.example.com/", "https://app.example.com/path", "app.example.com", "ftp://x.example",
                "https://*.example.com", "null"):  # fmt: skip
        with pytest.raises(ValueError, match="not an origin"):
            parse_origin(bad)


def test_a_limiter_of_names_from_outside_stays_bounded() -> None:
    limiter = RateLimiter(rate=1, burst=2, max_buckets=100)
    for i in range(1_000):  # a flood of fresh addresses
        assert limiter.retry_after(f"10.0.{i // 256}.{i % 256}", now=0.0) == 0
    assert len(limiter.buckets) <= 100
    last = "10.0.3.231"  # the newest, kept: one of its two tokens left
    assert limiter.retry_after(last, now=0.0) == 0
    assert limiter.retry_after(last, now=0.0) == 1  # a name still tracked keeps its limit
