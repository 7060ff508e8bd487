"""parallel.map: same results in-process, in a process pool and on Ray."""

from __future__ import annotations

import importlib.util
import math

import pytest

from aigclab.errors import AigclabError
from aigclab.parallel import imap, map_items


def square(x: int) -> int:
    return x * x


def test_inline_and_pool_agree_and_keep_order() -> None:
    items = list(range(7, -3, -1))
    expected = [x * x for x in items]
    assert map_items(square, items, workers=1) == expected
    assert map_items(square, items, workers=2) == expected


def test_unknown_engine_is_a_clear_error() -> None:
    with pytest.raises(AigclabError, match="unknown engine 'dask'"):
        map_items(square, [1], engine="dask")  # type: ignore[arg-type]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the [ray] extra is not installed")
def test_ray_engine_gives_the_same_results() -> None:
    items = list(range(10))  # Ray workers import functions by module, so use an installed one
    assert map_items(math.factorial, items, engine="ray", workers=2) == map_items(
        math.factorial, items, workers=2
    )


def test_imap_streams_in_order_with_bounded_lookahead() -> None:
    pulled = []

    def items():  # type: ignore[no-untyped-def]
        for i in range(100):
            pulled.append(i)
            yield i

    stream = imap(square, items(), workers=2, inflight=4)
    first = [next(stream) for _ in range(3)]
    assert first == [0, 1, 4] and len(pulled) <= 3 + 4  # never reads far ahead of the consumer
    assert first + list(stream) == [i * i for i in range(100)]
    assert list(imap(pow, [2, 3], args=(3,), workers=1)) == [8, 27]


def test_address_without_ray_is_a_clear_error() -> None:
    with pytest.raises(AigclabError, match="--address needs --engine ray"):
        list(imap(square, [1], address="10.0.0.1:6379"))
