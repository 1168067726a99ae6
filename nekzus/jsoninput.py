"""The one parser for JSON that clients send: HTTP bodies and WebSocket messages alike.

Python's decoder recurses once per nesting level, so a deeply nested document (``[[[[…``) ends in
``RecursionError`` rather than a clean refusal. Nesting is therefore measured first, without
recursion and in linear time, and a document nested deeper than ``MAX_DEPTH`` is refused before the
decoder sees it. No request or message of the API nests more than a few levels.
"""

from __future__ import annotations

import json
from array import array
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64

_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and (as a signed byte) -1
_PAIR = b"\x01\xff"
_PAIR_PASSES = 2
_HEAD = 16  # brackets (times the limit) in which the running sum is first followed as it is


class InvalidJson(ValueError):
    """Client input that is not JSON the gateway accepts.

    The message completes "The request body is …" / "The message is …" and is safe to send back.
    """


def nests_deeper_than(text: bytes, limit: int) -> bool:
    """Whether arrays and objects in UTF-8 ``text`` open more than ``limit`` levels deep.

    Escaped backslashes and quotes are removed (then quotes alternate between opening and closing
    a string), then strings, so brackets inside strings do not count, and the running sum of +1 per
    opening and -1 per closing bracket is the nesting depth. The decoder stops at the first error
    in its input, and up to there this view of the text is its own: when this answers False,
    decoding never recurses more than ``limit`` levels, whatever follows the error.

    A deeply nested attack shows in the first brackets already, where the running sum stops at the
    first level too deep. Documents with many brackets are mostly innermost pairs (``[]``, ``{}``
    once their contents are gone): each pass that deletes the adjacent pairs leaves the running sum
    at every other bracket as it was and hides at most one level, so the sum over what is left may
    reach ``limit`` minus the passes made.
    """
    if text.count(b"[") + text.count(b"{") <= limit:
        return False  # every ordinary request and message: nothing more to look at
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' in text:
        text = b"".join(text.split(b'"')[::2])
    steps = text.translate(_STEPS, _NOT_BRACKET)
    if any(map(limit.__lt__, accumulate(array("b", steps[: _HEAD * limit])))):
        return True
    hidden = 0
    while hidden < _PAIR_PASSES and len(shorter := steps.replace(_PAIR, b"")) < len(steps):
        steps, hidden = shorter, hidden + 1
    return any(map((limit - hidden).__lt__, accumulate(array("b", steps))))


def loads(raw: bytes | str) -> Any:
    """The decoded document, or InvalidJson saying what is wrong with it (never RecursionError).

    Bytes must be UTF-8 (RFC 8259; a byte order mark is allowed), so that the nesting is measured
    on the same characters the decoder reads.
    """
    encoded = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if nests_deeper_than(encoded, MAX_DEPTH):
        raise InvalidJson(f"nested more than {MAX_DEPTH} levels deep")
    try:
        text = raw if isinstance(raw, str) else raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidJson("not valid UTF-8") from exc
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and integers over Python's 4,300-digit limit
        raise InvalidJson("not valid JSON") from exc
    except RecursionError as exc:  # unreachable after the nesting check; kept so it stays a 400
        raise InvalidJson(f"nested more than {MAX_DEPTH} levels deep") from exc
