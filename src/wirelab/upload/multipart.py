"""The file of a `multipart/form-data` body, pulled out as the body streams by (a browser's form).

python-multipart parses incrementally, so only the bytes of the current network read are ever held.
The first part with a filename is the image; other fields are read past and ignored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from wirelab.errors import BadRequest, Unprocessable

if TYPE_CHECKING:  # python-multipart defines its callback table for type checkers only
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["file_part", "is_multipart"]


def is_multipart(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "multipart/form-data"


async def file_part(chunks: AsyncIterator[bytes], content_type: str) -> AsyncIterator[bytes]:
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise BadRequest("a multipart/form-data body needs a boundary in its Content-Type")
    part = _FilePart()
    parser = MultipartParser(boundary, part.callbacks())
    try:
        async for chunk in chunks:
            parser.write(chunk)
            for data in part.take():
                yield data
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(f"the multipart body is malformed: {exc}") from None
    for data in part.take():
        yield data
    if not part.ended:
        raise BadRequest("the multipart body ended before its closing boundary")
    if not part.found:
        raise Unprocessable("the form has no file part (a field with a filename)")


class _FilePart:
    """Parser callbacks that keep the data of the first part carrying a filename."""

    def __init__(self) -> None:
        self.found = self.ended = False
        self._reading = self._has_filename = False
        self._field = self._value = b""
        self._data: list[bytes] = []

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._add("_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._add("_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def take(self) -> list[bytes]:
        data, self._data = self._data, []
        return data

    def _begin(self) -> None:
        self._has_filename = False

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + bytes(data))

    def _header_end(self) -> None:
        if self._field.lower() == b"content-disposition":
            self._has_filename = b"filename" in parse_options_header(self._value)[1]
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        self._reading = self._has_filename and not self.found
        self.found = self.found or self._reading

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._reading:
            self._data.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        self._reading = False

    def _end(self) -> None:
        self.ended = True
