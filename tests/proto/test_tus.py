"""The tus 1.0.0 rules on their own: headers in, an upload's state or a refusal out."""

from __future__ import annotations

import base64
import hashlib

import pytest

from wirelab.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    PayloadTooLarge,
    PreconditionFailed,
    UnsupportedMediaType,
)
from wirelab.proto.tus import (
    OFFSET_OCTET_STREAM,
    ChecksumMismatch,
    Upload,
    check_version,
    creation_body,
    discovery_headers,
    final_parts,
    new_final,
    new_upload,
    parse_checksum,
    parse_metadata,
    plan_patch,
    state_headers,
)

ID = "0" * 32
LIMIT = 1000


def _upload(length: int | None = 100, offset: int = 0, **fields: object) -> Upload:
    return Upload(ID, length, offset, expires_at=1000.0, **fields)  # type: ignore[arg-type]


def _patch(offset: int, **headers: str) -> dict[str, str]:
    return {"content-type": OFFSET_OCTET_STREAM, "upload-offset": str(offset), **headers}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_only_version_1_0_0_is_spoken() -> None:
    check_version({"tus-resumable": "1.0.0"})
    for headers in ({"tus-resumable": "0.2.2"}, {}):
        with pytest.raises(PreconditionFailed) as refused:
            check_version(headers)
        assert refused.value.headers == {"tus-version": "1.0.0"}


def test_discovery_announces_every_extension_and_the_size_limit() -> None:
    headers = discovery_headers(LIMIT)
    assert headers["tus-version"] == "1.0.0" and headers["tus-max-size"] == "1000"
    assert headers["tus-extension"].split(",") == [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "checksum",
        "termination",
        "expiration",
        "concatenation",
    ]
    assert headers["tus-checksum-algorithm"] == "md5,sha1,sha256"


def test_creation_takes_a_length_or_a_deferral_never_both_or_neither() -> None:
    made = new_upload(ID, {"upload-length": "10"}, max_size=LIMIT, now=5, lifetime=60)
    assert (made.length, made.offset, made.expires_at, made.complete) == (10, 0, 65, False)
    deferred = new_upload(ID, {"upload-defer-length": "1"}, max_size=LIMIT, now=0, lifetime=1)
    assert deferred.length is None and state_headers(deferred)["upload-defer-length"] == "1"
    for bad in ({}, {"upload-length": "10", "upload-defer-length": "1"}, {"upload-defer-length": "2"}):
        with pytest.raises(BadRequest):
            new_upload(ID, bad, max_size=LIMIT, now=0, lifetime=1)


@pytest.mark.parametrize("length", ["-1", "1e3", "", "abc", "1" * 19, "١٢"])
def test_lengths_are_plain_decimal_numbers(length: str) -> None:
    with pytest.raises(BadRequest):
        new_upload(ID, {"upload-length": length}, max_size=LIMIT, now=0, lifetime=1)


def test_a_length_over_the_maximum_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        new_upload(ID, {"upload-length": "1001"}, max_size=LIMIT, now=0, lifetime=1)


def test_an_empty_upload_is_complete_at_once() -> None:
    assert new_upload(ID, {"upload-length": "0"}, max_size=LIMIT, now=0, lifetime=1).complete


def test_metadata_pairs_decode_and_echo_back_as_sent() -> None:
    raw = f"filename {_b64('a b.jpg')},targets {_b64('480p')},is_private"
    assert parse_metadata(raw) == {"filename": "a b.jpg", "targets": "480p", "is_private": None}
    made = new_upload(ID, {"upload-length": "1", "upload-metadata": raw}, max_size=LIMIT, now=0, lifetime=1)
    assert state_headers(made)["upload-metadata"] == raw
    assert parse_metadata("") == {}


@pytest.mark.parametrize("raw", ["name !!!", "a YQ==,a YQ==", "key YQ==,YQ==", "k YQ== YQ==", "ke:y YQ=="])
def test_malformed_metadata_is_400(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_metadata(raw)


def test_a_patch_must_start_at_the_server_offset() -> None:
    plan = plan_patch(_upload(offset=40), _patch(40), max_size=LIMIT, now=0)
    assert (plan.upload.offset, plan.limit, plan.checksum) == (40, 60, None)
    with pytest.raises(Conflict) as conflict:
        plan_patch(_upload(offset=40), _patch(39), max_size=LIMIT, now=0)
    assert conflict.value.headers == {"upload-offset": "40"}


def test_a_patch_needs_the_offset_content_type_and_an_offset() -> None:
    with pytest.raises(UnsupportedMediaType):
        plan_patch(
            _upload(), _patch(0, **{"content-type": "application/octet-stream"}), max_size=LIMIT, now=0
        )
    with pytest.raises(BadRequest):
        plan_patch(_upload(), {"content-type": OFFSET_OCTET_STREAM}, max_size=LIMIT, now=0)


def test_expired_and_final_uploads_take_no_patch() -> None:
    with pytest.raises(Gone):
        plan_patch(_upload(), _patch(0), max_size=LIMIT, now=1000)
    with pytest.raises(Forbidden):
        plan_patch(_upload(concat="final"), _patch(0), max_size=LIMIT, now=0)


def test_a_deferred_length_is_set_once_by_a_patch() -> None:
    deferred = _upload(length=None, offset=30)
    assert plan_patch(deferred, _patch(30), max_size=LIMIT, now=0).limit == LIMIT - 30
    plan = plan_patch(deferred, _patch(30, **{"upload-length": "50"}), max_size=LIMIT, now=0)
    assert plan.upload.length == 50 and plan.limit == 20
    with pytest.raises(BadRequest):
        plan_patch(deferred, _patch(30, **{"upload-length": "20"}), max_size=LIMIT, now=0)
    with pytest.raises(BadRequest):
        plan_patch(_upload(length=100), _patch(0, **{"upload-length": "99"}), max_size=LIMIT, now=0)
    with pytest.raises(PayloadTooLarge):
        plan_patch(deferred, _patch(30, **{"upload-length": "1001"}), max_size=LIMIT, now=0)


def test_checksums_parse_and_verify() -> None:
    digest = hashlib.sha1(b"chunk").digest()
    checksum = parse_checksum("sha1 " + base64.b64encode(digest).decode())
    checksum.verify(digest)
    with pytest.raises(ChecksumMismatch) as mismatch:
        checksum.verify(hashlib.sha1(b"other").digest())
    assert mismatch.value.status == 460
    plan = plan_patch(
        _upload(), _patch(0, **{"upload-checksum": "md5 " + _b64("x" * 16)}), max_size=LIMIT, now=0
    )
    assert plan.checksum is not None and plan.checksum.algorithm == "md5"


@pytest.mark.parametrize("raw", ["crc32 AAAAAA==", "sha1 not-base64!", "sha1 " + _b64("short"), "sha1"])
def test_unusable_checksums_are_400(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_checksum(raw)


def test_a_final_upload_is_the_sum_of_complete_partials() -> None:
    a = Upload("a" * 32, 10, 10, 99.0, concat="partial")
    b = Upload("b" * 32, 5, 5, 99.0, concat="partial")
    assert final_parts(f"final;/uploads/{a.id} http://h/uploads/{b.id}") == [a.id, b.id]
    final = new_final(ID, {}, [a, b], max_size=LIMIT, now=0, lifetime=10)
    assert (final.length, final.offset, final.complete, final.parts) == (15, 15, True, (a.id, b.id))
    assert state_headers(final)["upload-concat"] == f"final;/uploads/{a.id} /uploads/{b.id}"
    unfinished = Upload("c" * 32, 10, 3, 99.0, concat="partial")
    for parts in ([a, unfinished], [a, Upload("d" * 32, 1, 1, 99.0)]):
        with pytest.raises(BadRequest):
            new_final(ID, {}, parts, max_size=LIMIT, now=0, lifetime=10)
    with pytest.raises(PayloadTooLarge):
        new_final(ID, {}, [a, b], max_size=14, now=0, lifetime=10)
    with pytest.raises(BadRequest):
        new_final(ID, {"upload-length": "15"}, [a, b], max_size=LIMIT, now=0, lifetime=10)


@pytest.mark.parametrize("raw", ["final;", "final", "final;/uploads/../../etc", "partial;x"])
def test_bad_final_lists_are_400(raw: str) -> None:
    with pytest.raises(BadRequest):
        final_parts(raw)


def test_state_round_trips_through_json() -> None:
    upload = _upload(length=None, offset=3, metadata="a YQ==", concat="final", parts=("p" * 32,), job="j")
    assert Upload.from_json(upload.to_json()) == upload


def test_creation_with_upload_is_told_by_content_type_and_a_body() -> None:
    assert creation_body({"content-type": OFFSET_OCTET_STREAM, "content-length": "5"})
    assert creation_body({"content-type": OFFSET_OCTET_STREAM, "transfer-encoding": "chunked"})
    assert not creation_body({"content-type": OFFSET_OCTET_STREAM, "content-length": "0"})
    assert not creation_body({"content-length": "5"})
