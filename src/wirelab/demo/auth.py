"""`wirelab demo auth`: a server-side session against a signed token, across two instances and a restart.

Two `wirelab up` processes share one JWT secret, as instances behind a balancer would. The client logs
in both ways on instance A, then asks "who am I?" on A, on B, and on A again after A restarted. The
session is a record in A's memory: B never heard of it and the restart forgets it. The token carries
its own proof: any instance with the key checks it, before and after the restart. The demo also times
the question both ways, since checking a signature is work a session lookup does not do.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wirelab.testing import ServerProcess

__all__ = ["AuthOutcome", "run_auth"]

SECRET_ENV = "WIRELAB_JWT_SECRET"
TIMED_REQUESTS = 200


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """`whoami` status codes per credential and place, and the median time of one check on A."""

    session: dict[str, int]
    token: dict[str, int]
    session_ms: float
    token_ms: float

    @property
    def as_designed(self) -> bool:
        return self.session == {"A": 200, "B": 401, "A restarted": 401} and set(self.token.values()) == {
            200
        }

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"credential": "session", **self.session, "median_ms": self.session_ms},
            {"credential": "jwt", **self.token, "median_ms": self.token_ms},
        ]


def run_auth(*, console: Console, json_path: Path | None = None) -> int:
    """Run the experiment, print what it saw (and write `json_path`); 0 when it went as designed."""
    os.environ.setdefault(SECRET_ENV, secrets.token_urlsafe(48))  # the children inherit it
    with tempfile.TemporaryDirectory(prefix="wirelab-demo-") as tmp:
        a = ServerProcess(Path(tmp) / "a", log_path=Path(tmp) / "a.log")
        b = ServerProcess(Path(tmp) / "b", log_path=Path(tmp) / "b.log")
        with a, b:
            outcome = _experiment(a, b, console)
    _print(console, outcome)
    if json_path is not None:
        json_path.write_text(json.dumps({"demo": "auth", "rows": outcome.rows()}, indent=2) + "\n")
    return 0 if outcome.as_designed else 1


def _experiment(a: ServerProcess, b: ServerProcess, console: Console) -> AuthOutcome:
    def say(text: str) -> None:
        console.print(f"[bold]     auth[/] │ {escape(text)}")

    say(f"two instances sharing {SECRET_ENV}: A on {a.url}, B on {b.url}")
    login = httpx.post(f"{a.url}/sessions", json={"user": "ada"})
    session = {"cookie": login.headers["set-cookie"].split(";")[0]}
    token = {
        "authorization": "Bearer " + httpx.post(f"{a.url}/tokens", json={"user": "ada"}).json()["token"]
    }
    say("ada logged in on A twice: a session cookie, and a signed token")
    seen_session = {"A": _whoami(a, session), "B": _whoami(b, session)}
    seen_token = {"A": _whoami(a, token), "B": _whoami(b, token)}
    session_ms, token_ms = _median_ms(a, session), _median_ms(a, token)
    say(f"whoami with the session: A {seen_session['A']}, B {seen_session['B']}")
    say(f"whoami with the token: A {seen_token['A']}, B {seen_token['B']}")
    a.stop()
    a.start()
    say("A restarted (SIGTERM, start again on the same port)")
    seen_session["A restarted"] = _whoami(a, session)
    seen_token["A restarted"] = _whoami(a, token)
    say(f"whoami on the new A: session {seen_session['A restarted']}, token {seen_token['A restarted']}")
    return AuthOutcome(seen_session, seen_token, session_ms, token_ms)


def _whoami(server: ServerProcess, headers: dict[str, str]) -> int:
    return httpx.get(f"{server.url}/whoami", headers=headers).status_code


def _median_ms(server: ServerProcess, headers: dict[str, str]) -> float:
    """The median round trip of one `whoami` on one kept-alive connection."""
    times = []
    with httpx.Client(base_url=server.url, headers=headers) as http:
        for _ in range(TIMED_REQUESTS):
            started = time.perf_counter()
            http.get("/whoami").raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def _print(console: Console, outcome: AuthOutcome) -> None:
    table = Table(title="wirelab demo auth: who can tell who you are")
    for column in (
        "credential",
        "on A",
        "on B",
        "on A after a restart",
        f"median whoami on A ({TIMED_REQUESTS})",
    ):
        table.add_column(column)
    for name, seen, ms in (
        ("session (state in A's memory)", outcome.session, outcome.session_ms),
        ("JWT (state in the token)", outcome.token, outcome.token_ms),
    ):
        table.add_row(name, str(seen["A"]), str(seen["B"]), str(seen["A restarted"]), f"{ms:.2f} ms")
    console.print(table)
