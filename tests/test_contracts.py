"""Every registry entry, built at its tiny setting, must honour its family's contract.

Each registry kind has one contract function below (decorated with ``@contract(kind)``); a registry
without a contract fails the suite, so a new family cannot land untested.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import pytest

from aigclab._registry import all_registries
from aigclab.cli import PARTS

for _part in PARTS:
    importlib.import_module(f"aigclab.{_part}")
importlib.import_module("aigclab.degradations")

CONTRACTS: dict[str, Callable[[str], None]] = {}


def contract(kind: str) -> Callable[[Callable[[str], None]], Callable[[str], None]]:
    def decorate(fn: Callable[[str], None]) -> Callable[[str], None]:
        CONTRACTS[kind] = fn
        return fn

    return decorate


@contract("degradation")
def _degradation(name: str) -> None:
    from aigclab.degradations import create_degradation

    img = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    before = img.copy()
    deg = create_degradation(name)
    a = deg(img, np.random.default_rng(1))
    b = deg(img, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    np.testing.assert_array_equal(a, b)  # same seed, same output
    np.testing.assert_array_equal(img, before)  # input not mutated


ENTRIES = sorted((kind, name) for kind, reg in all_registries().items() for name in reg.list())


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_registry_entry_honours_contract(kind: str, name: str) -> None:
    assert kind in CONTRACTS, f"registry {kind!r} has no contract in tests/test_contracts.py"
    CONTRACTS[kind](name)
