"""Stateful sessions beside stateless tokens: who is calling, and which instance can tell.

POST /sessions {"user"}   201, Set-Cookie wirelab_session=ID: a session kept in THIS process's memory
POST /tokens {"user"}     201 {"token", "expires_in"}: a JWT (RFC 7519) signed HS256 with the shared secret
GET  /whoami              200 {"user", "via": "session" | "jwt", "instance"}, else 401 problem+json

Theory of operation: a session id is a random name for a record only its instance holds, so behind a
load balancer it works on one instance and is unknown (401) on every other, and a restart forgets it.
A token carries its claims (sub, iat, exp, iss) and an HMAC over them; any instance with the same key
(WIRELAB_JWT_SECRET) checks it without asking anyone, which is what makes the instances stateless and
interchangeable. Without that variable each process draws its own key, and its tokens work only there.
The price of statelessness: a token cannot be revoked before it expires, hence the short default life.
Both cores take `now` rather than reading the clock, so tests can stand at any instant.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from typing import Any

import jwt

from wirelab.app.config import Config
from wirelab.errors import ConfigError, ProblemError, Unprocessable
from wirelab.http import Request, Router, send_json

__all__ = [
    "INSTANCE",
    "ISSUER",
    "MAX_USER",
    "SESSION_COOKIE",
    "Sessions",
    "Tokens",
    "Unauthorized",
    "auth_routes",
]

log = logging.getLogger("wirelab")

INSTANCE = secrets.token_hex(4)
"""This process's short random id, so a client can see which instance answered."""
ISSUER = "wirelab"
SESSION_COOKIE = "wirelab_session"
ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
"""RFC 7518 §3.2: an HS256 key must be at least as long as the hash output, 256 bits."""
MAX_USER = 256


class Unauthorized(ProblemError):
    """401 with the WWW-Authenticate challenge RFC 9110 §15.5.2 requires (RFC 6750 §3 for Bearer)."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        challenge = 'Bearer realm="wirelab"'
        if invalid_token:
            description = "".join(
                c if c.isascii() and c.isprintable() and c not in '"\\' else "'" for c in detail
            )
            challenge += f', error="invalid_token", error_description="{description}"'
        super().__init__(detail, headers={"www-authenticate": challenge})


class Tokens:
    """Sign and check HS256 tokens; `verify` refuses every algorithm but HS256 (so alg "none" too)."""

    def __init__(self, secret: str, *, ttl_s: int = 3600) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"jwt_secret (WIRELAB_JWT_SECRET): expected at least {MIN_SECRET_BYTES} bytes"
            )
        self._key = secret
        self.ttl_s = ttl_s

    def sign(self, user: str, *, now: float) -> str:
        issued = int(now)
        claims = {"sub": user, "iat": issued, "exp": issued + self.ttl_s, "iss": ISSUER}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str, *, now: float) -> str:
        """The token's user; Unauthorized saying why when the token is malformed, forged or expired."""
        claims = self._decode(token)
        if not isinstance(claims["exp"], int | float):
            raise Unauthorized("malformed token: exp is not a number", invalid_token=True)
        if now >= claims["exp"]:
            raise Unauthorized("the token has expired; ask POST /tokens for a new one", invalid_token=True)
        user: str = claims["sub"]
        return user

    def _decode(self, token: str) -> dict[str, Any]:
        """Check signature, algorithm, issuer and required claims; expiry is checked against `now`."""
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "iat", "exp", "iss"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            reason = "bad signature: the token was not signed with this service's key"
        except jwt.InvalidAlgorithmError:
            reason = f"the token's algorithm is not allowed; only {ALGORITHM} is"
        except jwt.MissingRequiredClaimError as exc:
            reason = f"the token lacks the {exc.claim!r} claim"
        except jwt.InvalidIssuerError:
            reason = f"the token was not issued by {ISSUER}"
        except jwt.InvalidTokenError as exc:
            reason = f"malformed token: {exc}"
        raise Unauthorized(reason, invalid_token=True)


class Sessions:
    """Session ids to users, in this process's memory only; the oldest go when `limit` is reached."""

    def __init__(self, *, ttl_s: int = 3600, limit: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self._limit = limit
        self._users: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def create(self, user: str, *, now: float) -> str:
        session = secrets.token_urlsafe(24)
        self._users[session] = (user, now + self.ttl_s)
        while len(self._users) > self._limit:
            self._users.popitem(last=False)
        return session

    def user_of(self, session: str, *, now: float) -> str:
        user, expires = self._users.get(session, ("", 0.0))
        if not user:
            raise Unauthorized(f"unknown session: instance {INSTANCE} holds no session by that id")
        if now >= expires:
            del self._users[session]
            raise Unauthorized("the session has expired; POST /sessions again")
        return user

    def __len__(self) -> int:
        return len(self._users)


def cookie(header: str, name: str) -> str | None:
    """The value of cookie `name` in a Cookie header (RFC 6265 §5.4: `a=1; b=2`)."""
    for pair in header.split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key == name:
            return value
    return None


def _user(body: Any) -> str:
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str) or not 0 < len(user) <= MAX_USER:
        raise Unprocessable(f"user must be a non-empty string of at most {MAX_USER} characters")
    return user


def _tokens(config: Config) -> Tokens:
    if config.jwt_secret is not None:
        return Tokens(config.jwt_secret)
    log.warning("WIRELAB_JWT_SECRET is not set: tokens signed here are valid on instance %s only", INSTANCE)
    return Tokens(secrets.token_urlsafe(MIN_SECRET_BYTES))


def auth_routes(router: Router, config: Config) -> None:
    """Add POST /sessions, POST /tokens and GET /whoami to `router`."""
    tokens, sessions = _tokens(config), Sessions()
    no_store = ("cache-control", "no-store")

    def authenticate(request: Request) -> tuple[str, str]:
        """(user, via): an Authorization header wins over the cookie, and must then be valid."""
        now = time.time()
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("Authorization must be: Bearer <token>")
            return tokens.verify(token.strip(), now=now), "jwt"
        session = cookie(request.headers.get("cookie", ""), SESSION_COOKIE)
        if session is not None:
            return sessions.user_of(session, now=now), "session"
        raise Unauthorized(
            f"no credentials: send Authorization: Bearer <token> or the {SESSION_COOKIE} cookie"
        )

    async def create_session(request: Request) -> None:
        user = _user(await request.json())
        session = sessions.create(user, now=time.time())
        set_cookie = f"{SESSION_COOKIE}={session}; HttpOnly; SameSite=Lax; Path=/; Max-Age={sessions.ttl_s}"
        body = {"user": user, "session": True, "instance": INSTANCE}
        await send_json(request.send, 201, body, headers=[("set-cookie", set_cookie), no_store])

    async def create_token(request: Request) -> None:
        token = tokens.sign(_user(await request.json()), now=time.time())
        await send_json(request.send, 201, {"token": token, "expires_in": tokens.ttl_s}, headers=[no_store])

    async def whoami(request: Request) -> None:
        user, via = authenticate(request)
        await send_json(request.send, 200, {"user": user, "via": via, "instance": INSTANCE})

    router.http("POST", "/sessions", create_session)
    router.http("POST", "/tokens", create_token)
    router.http("GET", "/whoami", whoami)
