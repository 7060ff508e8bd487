"""parallel.map: same results in-process, in a process pool and on Ray."""

from __future__ import annotations

import importlib.util
import math

import pytest

from aigclab.errors import AigclabError
from aigclab.parallel import map_items


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
