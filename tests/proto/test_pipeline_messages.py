"""The image pipeline's message schema: what is accepted, and what goes to the dead-letter queue."""

from __future__ import annotations

import json

import pytest

from wirelab.errors import ProtocolError
from wirelab.proto.pipeline import JobProgress, StageMessage, decode_progress, decode_stage

JOB, IMAGE = "0123456789abcdef", "0123456789abcdef0123456789abcdef"


def test_stage_messages_round_trip() -> None:
    uploaded = StageMessage(JOB, IMAGE, ("480p", "4k"))
    assert decode_stage(uploaded.encode(), with_target=False) == uploaded
    compressed = StageMessage(JOB, IMAGE, ("480p", "4k"), "4k")
    assert decode_stage(compressed.encode(), with_target=True) == compressed
    assert json.loads(compressed.encode())["v"] == 1


def test_progress_round_trips() -> None:
    progress = JobProgress(JOB, "format", 1.0, "done", [{"name": "480p"}])
    assert decode_progress(progress.encode()) == progress


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        json.dumps({"v": 2, "job": JOB, "image": IMAGE, "targets": ["480p"]}).encode(),
        json.dumps({"v": 1, "image": IMAGE, "targets": ["480p"]}).encode(),
        json.dumps({"v": 1, "job": "../etc", "image": IMAGE, "targets": ["480p"]}).encode(),
        json.dumps({"v": 1, "job": JOB, "image": IMAGE, "targets": []}).encode(),
        json.dumps({"v": 1, "job": JOB, "image": IMAGE, "targets": ["8k"]}).encode(),
    ],
)
def test_malformed_stage_messages_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_stage(body, with_target=False)


def test_a_target_must_be_one_of_the_messages_targets() -> None:
    body = json.dumps({"v": 1, "job": JOB, "image": IMAGE, "targets": ["480p"], "target": "4k"})
    with pytest.raises(ProtocolError):
        decode_stage(body.encode(), with_target=True)


@pytest.mark.parametrize(
    "change",
    [{"progress": 2}, {"progress": "half"}, {"state": "exploded"}, {"outputs": None}, {"stage": 3}],
)
def test_malformed_progress_is_a_protocol_error(change: dict[str, object]) -> None:
    body = {"v": 1, "job": JOB, "stage": "format", "progress": 0.5, "state": "running", "outputs": []}
    with pytest.raises(ProtocolError):
        decode_progress(json.dumps({**body, **change}).encode())
