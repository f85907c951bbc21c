"""The WebSocket push protocol's messages (our own protocol, see wirelab.proto.pushwire)."""

from __future__ import annotations

import json

import pytest

from wirelab.errors import BadRequest
from wirelab.proto.pushwire import (
    Subscribe,
    Unsubscribe,
    encode_entry,
    encode_subscribe,
    parse_client_message,
)


def test_client_messages_round_trip() -> None:
    assert parse_client_message(encode_subscribe("jobs/1", 4)) == Subscribe("jobs/1", 4)
    assert parse_client_message(encode_subscribe("logins")) == Subscribe("logins", None)
    assert parse_client_message('{"op": "unsubscribe", "topic": "logins"}') == Unsubscribe("logins")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        b'{"op": "subscribe", "topic": "x"}',
        "[1, 2]",
        '{"op": "publish", "topic": "x"}',
        '{"op": "subscribe"}',
        '{"op": "subscribe", "topic": ""}',
        '{"op": "subscribe", "topic": "x", "after": -1}',
        '{"op": "subscribe", "topic": "x", "after": "3"}',
        '{"op": "subscribe", "topic": "x", "after": true}',
        '{"op": "subscribe", "topic": "x", "after": 1.5}',
    ],
)
def test_bad_messages_are_refused_with_a_reason(raw: str | bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_client_message(raw)
    assert caught.value.detail


def test_entry_message_splices_the_encoded_data() -> None:
    text = encode_entry("jobs/1", 3, "progress", '{"state":"running"}')
    assert json.loads(text) == {
        "topic": "jobs/1",
        "version": 3,
        "event": "progress",
        "data": {"state": "running"},
    }
