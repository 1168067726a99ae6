"""Client JSON through the one parser: nesting of any depth is refused cleanly, the rest decodes as before."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

import pytest

from nekzus import jsoninput
from nekzus.jsoninput import MAX_DEPTH, InvalidJson, loads, nests_deeper_than
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_security import registry

DEEP = 100_000


def deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, DEEP])
@pytest.mark.parametrize("shape", [deep_object, deep_array])
def test_nesting_beyond_the_limit_is_refused_without_recursing(shape: Any, depth: int) -> None:
    with pytest.raises(InvalidJson, match=f"nested more than {MAX_DEPTH} levels deep"):
        loads(shape(depth))
    with pytest.raises(InvalidJson, match="nested"):
        loads(shape(depth).encode())


def test_nesting_up_to_the_limit_decodes() -> None:
    assert loads(deep_array(MAX_DEPTH)) == json.loads(deep_array(MAX_DEPTH))
    mixed = '[{"k":' * (MAX_DEPTH // 2) + "0" + "}]" * (MAX_DEPTH // 2)
    assert loads(mixed) == json.loads(mixed)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"a": ["[" * 5000, "{" * 5000, '\\"[[[', "\\\\" + "[" * 100]})
    assert loads(text) == json.loads(text)
    # An escaped quote does not end the string: the brackets after it are still inside it.
    tricky = '["\\"' + "[" * 500 + '"]'
    assert loads(tricky) == ['"' + "[" * 500]
    # And an escaped backslash does end it: these brackets are outside, and too deep.
    with pytest.raises(InvalidJson, match="nested"):
        loads('["\\\\",' + "[" * 500 + "]" * 501)


def test_an_unclosed_deep_document_is_refused_as_too_deep() -> None:
    with pytest.raises(InvalidJson, match="nested"):
        loads("[" * DEEP)
    with pytest.raises(InvalidJson, match="nested"):
        loads('{"a":' * DEEP)


def test_a_recursion_the_check_missed_would_still_be_invalid_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsoninput, "nests_deeper_than", lambda text, limit: False)
    with pytest.raises(InvalidJson, match="nested more than"):
        loads(b"[" * 100_000 + b"]" * 100_000)


def test_other_bad_input_is_invalid_json() -> None:
    for bad in ("", "]" * DEEP, "{", "nul", b"\xff\xfe{}", "1" * 5000):
        with pytest.raises(InvalidJson, match="not valid"):
            loads(bad)
    assert loads(b'\xef\xbb\xbf{"bom": 1}') == {"bom": 1}


def test_the_parser_agrees_with_json_on_random_documents() -> None:
    rng = random.Random(10)
    pieces = ["[", "]", "{", "}", '"', "\\", "a", ",", ":", "1", " "]

    def leaf() -> Any:
        return rng.choice([1, "x[{", '\\"]}', None, True, "\\", [], {}])

    def document(depth: int) -> Any:
        """One branch ``depth`` levels deep, with leaves beside it at every level."""
        if depth == 0:
            return leaf()
        children = [leaf() for _ in range(rng.randint(0, 2))]
        children.insert(rng.randint(0, len(children)), document(depth - 1))
        if rng.random() < 0.5:
            return children
        return {f"k{n}[": child for n, child in enumerate(children)}

    for _ in range(300):
        depth = rng.randint(0, MAX_DEPTH + 10)
        text = json.dumps(document(depth))
        actual = max_depth(json.loads(text))
        if actual <= MAX_DEPTH:
            assert loads(text) == json.loads(text)
        else:
            with pytest.raises(InvalidJson):
                loads(text)
        # Random text, mostly broken: the same verdict as the decoder's own.
        garbage = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 400)))
        try:
            expected = json.loads(garbage)
        except ValueError:
            with pytest.raises(InvalidJson):
                loads(garbage)
        else:
            assert loads(garbage) == expected


def max_depth(value: Any) -> int:
    stack = [(value, 1 if isinstance(value, list | dict) else 0)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else []
        stack.extend((child, depth + 1) for child in children if isinstance(child, list | dict))
    return deepest


def test_a_deep_megabyte_is_refused_quickly() -> None:
    body = deep_array(512 * 1024).encode()
    started = time.perf_counter()
    assert nests_deeper_than(body, MAX_DEPTH)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/auth/login",
        "/api/v1/containers/batch",
        "/api/v1/containers/batch/export",
        "/api/v1/containers/000000000001/export",
    ],
)
async def test_deep_bodies_are_400_without_a_traceback(
    gateway: ClientFactory, docker_host: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await gateway(make_config(docker_host), runtimes=registry())
    for body in (deep_object(DEEP), deep_array(30_000), '{"a": ' + deep_array(DEEP) + "}"):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            resp = await client.post(path, data=body, headers={"Content-Type": "application/json"})
        assert resp.status == 400
        answer = await resp.json()
        assert answer["error"] == "INVALID_REQUEST"
        assert f"nested more than {MAX_DEPTH} levels deep" in answer["message"]
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
