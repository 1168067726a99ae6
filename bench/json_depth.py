"""The cost of refusing deeply nested JSON, and of checking the nesting of JSON that is accepted.

In-process, no daemon and no gateway: ``nekzus.jsoninput.loads``, the parser every request body
and WebSocket message goes through. Each body is parsed ``ROUNDS`` times; the table shows the
median and the spread (min–max), since the machine may be shared. Bodies of up to the 1 MiB cap:

- refused: a 100,000-deep object (``{"a":{"a":…``) and a 1 MiB deep array (``[[[…]]]``);
- accepted: 1 MiB of ``[[],[],…]`` and 1 MiB of a string of escaped quotes, where the nesting
  check has the most to read, next to ``json.loads`` alone on the same text;
- accepted: an ordinary batch export body (500 ids), where the check costs two counts.

Targets, as ratios so that a busy machine slows both sides alike: refusing either deep body costs
at most a tenth of decoding the accepted 1 MiB of ``[[],[],…]``, and the check on an accepted
bracket-heavy body at most as much as decoding it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from bench._harness import Row, run_local_script
from nekzus.jsoninput import MAX_DEPTH, InvalidJson, loads, nests_deeper_than

ROUNDS = 11
REFUSE_RATIO = 0.1
HALF_MIB = 512 * 1024


def _times(action: Callable[[], object]) -> list[float]:
    """Milliseconds of ``ROUNDS`` runs."""
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _refusal(body: bytes) -> list[float]:
    def refuse() -> None:
        try:
            loads(body)
        except InvalidJson as exc:
            assert "nested" in str(exc)
        else:
            raise AssertionError("a deep body was accepted")

    return _times(refuse)


def _spread(samples: list[float]) -> str:
    return f"{min(samples):.2f}–{max(samples):.2f} ms"


async def measure() -> list[Row]:
    rows: list[Row] = []
    heavy = {
        "1 MiB of [[],[],…]": b"[" + b"[]," * 349_000 + b"[]]",
        "1 MiB string of escaped quotes": b'"' + b'\\"' * 524_000 + b'"',
    }
    flat = heavy["1 MiB of [[],[],…]"].decode()
    reference = statistics.median(_times(lambda: json.loads(flat)))
    deep = {
        "100,000-deep object (600 KB)": ('{"a":' * 100_000 + "1" + "}" * 100_000).encode(),
        "1 MiB deep array": b"[" * HALF_MIB + b"]" * HALF_MIB,
    }
    for name, body in deep.items():
        samples = _refusal(body)
        print(f"refuse {name}: spread {_spread(samples)}")
        rows.append(Row(f"refuse {name}, median", statistics.median(samples), "ms"))
        rows.append(
            Row(
                f"refuse {name} / json.loads 1 MiB of [[],[],…]",
                statistics.median(samples) / reference,
                "",
                REFUSE_RATIO,
            )
        )
    for name, body in heavy.items():
        check = _times(lambda body=body: nests_deeper_than(body, MAX_DEPTH))  # type: ignore[misc]
        text = body.decode()
        decode = _times(lambda text=text: json.loads(text))  # type: ignore[misc]
        print(f"{name}: check spread {_spread(check)}, json.loads spread {_spread(decode)}")
        rows.append(Row(f"check {name}, median", statistics.median(check), "ms"))
        rows.append(Row(f"json.loads {name}, median", statistics.median(decode), "ms"))
        rows.append(
            Row(f"check / json.loads, {name}", statistics.median(check) / statistics.median(decode), "", 1.0)
        )
    ordinary = json.dumps({"container_ids": [f"c{n:011d}" for n in range(500)]}).encode()
    rows.append(
        Row(
            "parse an export body of 500 ids, median",
            statistics.median(_times(lambda: loads(ordinary))),
            "ms",
        )
    )
    return rows


if __name__ == "__main__":
    run_local_script("JSON nesting: refusing deep bodies, checking accepted ones", measure)
