"""Server text frames (RFC 6455 §5.2), checked against §5.7's example and websockets' own parser."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from wirelab.proto.wsframe import encode_text_frame


def test_the_rfc_example_single_frame_unmasked_text() -> None:
    """§5.7: a single-frame unmasked text message "Hello"."""
    assert encode_text_frame("Hello") == bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_every_length_encoding_parses_back(size: int) -> None:
    """§5.2: 7-bit, 16-bit and 64-bit payload lengths."""
    text = "é" * (size // 2) + "x" * (size % 2)
    reader = StreamReader()
    reader.feed_data(encode_text_frame(text))
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data.decode() == text
