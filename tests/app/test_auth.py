"""Sessions are stateful (one instance knows them); tokens stateless (any instance with the key checks).

The token and session cores are tested alone with the time passed in; then two real `wirelab up`
processes sharing WIRELAB_JWT_SECRET show the difference over real connections.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from wirelab.app.auth import INSTANCE, SESSION_COOKIE, Sessions, Tokens, Unauthorized, _tokens, cookie
from wirelab.app.config import Config
from wirelab.errors import ConfigError
from wirelab.testing import ServerProcess

SECRET = "wirelab-test-secret-" * 4  # 80 bytes: long enough for HS512 too (RFC 7518 §3.2)
NOW = 1_700_000_000.0


def _refused(error: pytest.ExceptionInfo[Unauthorized], words: str) -> None:
    assert error.value.status == 401 and words in error.value.detail
    assert error.value.headers["www-authenticate"].startswith('Bearer realm="wirelab"')


def test_a_signed_token_carries_sub_iat_exp_iss_and_verifies() -> None:
    """RFC 7519 §4.1: sub, iat, exp and iss are registered claims; RFC 7518 §3.2: HS256."""
    tokens = Tokens(SECRET)
    token = tokens.sign("ada", now=NOW)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sub": "ada", "iat": int(NOW), "exp": int(NOW) + 3600, "iss": "wirelab"}
    assert tokens.verify(token, now=NOW + 3599) == "ada"


def test_a_token_is_refused_from_its_expiry_on() -> None:
    """RFC 7519 §4.1.4: the token must not be accepted on or after its exp."""
    tokens = Tokens(SECRET, ttl_s=60)
    token = tokens.sign("ada", now=NOW)
    assert tokens.verify(token, now=NOW + 59.9) == "ada"
    with pytest.raises(Unauthorized) as error:
        tokens.verify(token, now=NOW + 60)
    _refused(error, "expired")
    assert 'error="invalid_token"' in error.value.headers["www-authenticate"]


def test_a_token_signed_with_another_key_is_a_bad_signature() -> None:
    forged = Tokens("another-secret-of-at-least-32-bytes!").sign("ada", now=NOW)
    with pytest.raises(Unauthorized) as error:
        Tokens(SECRET).verify(forged, now=NOW)
    _refused(error, "bad signature")


def test_a_tampered_payload_breaks_the_signature() -> None:
    tokens = Tokens(SECRET)
    header, _, signature = tokens.sign("ada", now=NOW).split(".")
    claims = {"sub": "root", "iat": int(NOW), "exp": int(NOW) + 3600, "iss": "wirelab"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized) as error:
        tokens.verify(f"{header}.{payload}.{signature}", now=NOW)
    _refused(error, "bad signature")


@pytest.mark.parametrize(("key", "algorithm"), [(None, "none"), (SECRET, "HS512"), (SECRET, "HS384")])
def test_only_hs256_is_accepted(key: str | None, algorithm: str) -> None:
    """RFC 8725 §3.1: the verifier fixes the algorithm; "none" and look-alikes are refused."""
    claims = {"sub": "ada", "iat": int(NOW), "exp": int(NOW) + 60, "iss": "wirelab"}
    token = jwt.encode(claims, key, algorithm=algorithm)
    with pytest.raises(Unauthorized) as error:
        Tokens(SECRET).verify(token, now=NOW)
    _refused(error, "algorithm is not allowed")


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"sub": "ada", "iat": 1, "iss": "wirelab"}, "lacks the 'exp' claim"),
        ({"iat": 1, "exp": 2e9, "iss": "wirelab"}, "lacks the 'sub' claim"),
        ({"sub": "ada", "iat": 1, "exp": 2e9, "iss": "someone"}, "not issued by wirelab"),
    ],
)
def test_claims_are_required_and_the_issuer_checked(claims: dict[str, Any], words: str) -> None:
    with pytest.raises(Unauthorized) as error:
        Tokens(SECRET).verify(jwt.encode(claims, SECRET, algorithm="HS256"), now=NOW)
    _refused(error, words)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b"])
def test_garbage_is_a_malformed_token(token: str) -> None:
    with pytest.raises(Unauthorized) as error:
        Tokens(SECRET).verify(token, now=NOW)
    _refused(error, "malformed token")


def test_a_short_secret_is_a_config_error_that_does_not_show_it() -> None:
    """RFC 7518 §3.2: an HS256 key is at least 256 bits."""
    with pytest.raises(ConfigError) as error:
        Tokens("short-secret")
    assert "WIRELAB_JWT_SECRET" in str(error.value) and "short-secret" not in str(error.value)


def test_without_a_secret_each_process_draws_its_own_key() -> None:
    config = Config(jwt_secret=None)
    token = _tokens(config).sign("ada", now=NOW)
    with pytest.raises(Unauthorized):
        _tokens(config).verify(token, now=NOW)
    assert SECRET not in repr(Config(jwt_secret=SECRET))


def test_sessions_are_known_until_they_expire() -> None:
    sessions = Sessions(ttl_s=10)
    session = sessions.create("ada", now=NOW)
    assert sessions.user_of(session, now=NOW + 9) == "ada"
    with pytest.raises(Unauthorized) as error:
        sessions.user_of(session, now=NOW + 10)
    _refused(error, "expired")
    with pytest.raises(Unauthorized) as error:
        sessions.user_of(session, now=NOW)  # gone for good once expired
    _refused(error, f"unknown session: instance {INSTANCE}")


def test_the_oldest_sessions_go_at_the_limit() -> None:
    sessions = Sessions(limit=2)
    first, second, third = (sessions.create(u, now=NOW) for u in ("a", "b", "c"))
    assert len(sessions) == 2
    assert sessions.user_of(second, now=NOW) == "b" and sessions.user_of(third, now=NOW) == "c"
    with pytest.raises(Unauthorized):
        sessions.user_of(first, now=NOW)


def test_cookie_reads_one_pair_of_a_cookie_header() -> None:
    """RFC 6265 §5.4: the Cookie header is name=value pairs joined by "; "."""
    assert cookie(f"a=1; {SESSION_COOKIE}=xyz; b=2", SESSION_COOKIE) == "xyz"
    assert cookie(f"{SESSION_COOKIE}_old=1;other", SESSION_COOKIE) is None
    assert cookie("", SESSION_COOKIE) is None


# Over real connections: two instances sharing the key.


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WIRELAB_JWT_SECRET", SECRET)
        a = ServerProcess(tmp_path_factory.mktemp("a")).start()
        try:
            b = ServerProcess(tmp_path_factory.mktemp("b")).start()
        except BaseException:
            a.stop()
            raise
    try:
        yield a, b
    finally:
        for server in (a, b):
            server.stop()
            server.kill()


def _whoami(server: ServerProcess, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{server.url}/whoami", headers=headers)


def _unauthorized(response: httpx.Response, words: str) -> None:
    """RFC 9110 §15.5.2: a 401 carries a WWW-Authenticate challenge; RFC 9457 problem body."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert words in response.json()["detail"]


def test_a_session_works_on_its_instance_only(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    response = httpx.post(f"{a.url}/sessions", json={"user": "ada"})
    assert response.status_code == 201
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith(f"{SESSION_COOKIE}=")
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= {p.strip() for p in set_cookie.split(";")}
    instance_a = response.json()["instance"]
    assert response.json() == {"user": "ada", "session": True, "instance": instance_a}
    sent = {"cookie": set_cookie.split(";")[0]}
    mine = _whoami(a, sent)
    assert mine.status_code == 200
    assert mine.json() == {"user": "ada", "via": "session", "instance": instance_a}
    _unauthorized(_whoami(b, sent), "unknown session")


def test_a_token_from_one_instance_works_on_both(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    response = httpx.post(f"{a.url}/tokens", json={"user": "ada"})
    assert response.status_code == 201 and response.headers["cache-control"] == "no-store"
    assert response.json()["expires_in"] == 3600
    sent = {"authorization": f"Bearer {response.json()['token']}"}
    answers = [_whoami(server, sent) for server in (a, b)]
    assert [r.status_code for r in answers] == [200, 200]
    assert {r.json()["via"] for r in answers} == {"jwt"} and {r.json()["user"] for r in answers} == {"ada"}
    assert answers[0].json()["instance"] != answers[1].json()["instance"]


def test_expired_forged_and_unsigned_tokens_are_refused(pair: tuple[ServerProcess, ServerProcess]) -> None:
    expired = Tokens(SECRET).sign("ada", now=time.time() - 7200)
    forged = Tokens("another-secret-of-at-least-32-bytes!").sign("ada", now=time.time())
    claims = {"sub": "ada", "iat": int(time.time()), "exp": int(time.time()) + 60, "iss": "wirelab"}
    unsigned = jwt.encode(claims, None, algorithm="none")
    for server in pair:
        _unauthorized(_whoami(server, {"authorization": f"Bearer {expired}"}), "expired")
        _unauthorized(_whoami(server, {"authorization": f"Bearer {forged}"}), "bad signature")
        _unauthorized(_whoami(server, {"authorization": f"Bearer {unsigned}"}), "not allowed")


def test_no_or_malformed_credentials_are_refused(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, _ = pair
    _unauthorized(_whoami(a, {}), "no credentials")
    _unauthorized(_whoami(a, {"authorization": "Basic YWRhOnB3"}), "Bearer <token>")
    _unauthorized(_whoami(a, {"cookie": f"{SESSION_COOKIE}=made-up"}), "unknown session")
    for path in ("/sessions", "/tokens"):
        assert httpx.post(f"{a.url}{path}", json={"user": ""}).status_code == 422
        assert httpx.post(f"{a.url}{path}", json=["ada"]).status_code == 422


def test_the_secret_is_not_written_to_the_log(pair: tuple[ServerProcess, ServerProcess]) -> None:
    assert all(SECRET not in server.log() for server in pair)
