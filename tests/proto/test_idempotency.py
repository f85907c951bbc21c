"""The Idempotency-Key rules on their own: fingerprints, decisions, what is kept, keys that pass."""

from __future__ import annotations

import pytest

from wirelab.errors import BadRequest, Conflict, Unprocessable
from wirelab.proto.idempotency import (
    KeyRecord,
    StoredResponse,
    check_key,
    decide,
    fingerprint,
    worth_keeping,
)

RESPONSE = StoredResponse(201, (("content-type", "application/json"),), b'{"id":"1"}')


def test_a_json_payload_is_the_same_whatever_its_spelling() -> None:
    a = fingerprint("POST", "/comments", b'{"post": "p", "text": "hi"}')
    assert a == fingerprint("POST", "/comments", b'{"text":"hi","post":"p"}')
    assert a != fingerprint("POST", "/comments", b'{"post": "p", "text": "hi!"}')
    assert a != fingerprint("POST", "/jobs", b'{"post": "p", "text": "hi"}')
    assert fingerprint("POST", "/x", b"\xff raw") != fingerprint("POST", "/x", b"\xfe raw")


def test_an_unclaimed_key_executes() -> None:
    assert decide(None, "f") is None


def test_a_finished_key_with_the_same_payload_replays() -> None:
    assert decide(KeyRecord("k", "f", 1.0, RESPONSE), "f") == RESPONSE


def test_another_payload_under_the_same_key_is_422() -> None:
    with pytest.raises(Unprocessable):
        decide(KeyRecord("k", "f", 1.0, RESPONSE), "g")
    with pytest.raises(Unprocessable):
        decide(KeyRecord("k", "f", 1.0, None), "g")


def test_a_key_still_in_flight_is_409_with_retry_after() -> None:
    with pytest.raises(Conflict) as conflict:
        decide(KeyRecord("k", "f", 1.0, None), "f")
    assert conflict.value.headers == {"retry-after": "1"}


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        (201, True),
        (202, True),
        (400, True),
        (422, True),
        (404, True),
        (409, False),
        (423, False),
        (429, False),
        (500, False),
        (503, False),
    ],
)
def test_which_outcomes_a_retry_sees_again(status: int, kept: bool) -> None:
    assert worth_keeping(status) is kept


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there", "new\nline"])
def test_bad_keys_are_400(key: str) -> None:
    with pytest.raises(BadRequest):
        check_key(key)


def test_good_keys_pass() -> None:
    assert check_key("8e03978e-40d5-43e8-bc93-6894a57f9324") == "8e03978e-40d5-43e8-bc93-6894a57f9324"
    assert check_key("x" * 255)


def test_a_stored_response_keeps_only_the_headers_worth_repeating() -> None:
    stored = StoredResponse.of(
        202, [("Content-Type", "application/json"), ("Location", "/jobs/1"), ("Date", "today")], b"{}"
    )
    assert stored.headers == (("content-type", "application/json"), ("location", "/jobs/1"))
    assert StoredResponse.from_json(stored.to_json()) == stored
