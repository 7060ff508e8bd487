"""Retrain zoo generators from scratch with the build code and compare hashes with the shipped manifest.

Usage: python scripts/check_mini_rebuild.py dcgan flow   (one JSON line per generator on stdout)

The lines collected from such runs are kept in ``benchmarks/results/aigc_mini_rebuild.jsonl``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from aigclab.data.build import BuildSizes, sample_sets, train_generator
from aigclab.data.mini import mini_manifest
from aigclab.io import content_hash


def check(name: str) -> dict:
    entry = mini_manifest()["generators"][name]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_generator(name, Path(tmp), BuildSizes(), log=lambda _: None)
        sets = sample_sets(name, Path(tmp), BuildSizes())
        weights_ok = content_hash(Path(tmp) / entry["weights"]) == entry["weights_sha256"]
    return {
        "generator": name,
        "weights_identical": weights_ok,
        "train_identical": content_hash(sets["train"]) == entry["train"]["sha256"],
        "test_identical": content_hash(sets["test"]) == entry["test"]["sha256"],
        "seconds": round(time.perf_counter() - start),
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name in sys.argv[1:]:
        print(json.dumps(check(name)), flush=True)
