"""Reports: JSON, markdown table with a mean row, and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from aigclab.reports import markdown_table, write_detection_report, write_json


def test_detection_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    gens = np.where(labels == 0, "real", np.where(rng.random(200) < 0.5, "gan", "ddpm"))
    scores = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, 200), 0, 1)
    rep = write_detection_report(tmp_path, "run", scores, labels, gens.tolist(), extra={"detector": "x"})
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["detector"] == "x" and set(data["per_generator"]) == {"ddpm", "gan"}
    assert data["mean"]["acc"] == rep["mean"]["acc"]
    md = (tmp_path / "run.md").read_text().strip().splitlines()
    assert (
        md[2].startswith("| generator |") and md[-1].startswith("| **mean** |") and len(md) == 2 + 2 + 2 + 1
    )
    for png in ("run_roc.png", "run_acc.png"):
        assert Image.open(tmp_path / png).size[0] > 100


def test_write_json_turns_nan_into_null(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": float("nan"), "y": np.float32(1.5), "z": [np.int64(2)]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": 1.5, "z": [2]}


def test_markdown_table_formats_floats() -> None:
    assert markdown_table([{"a": 0.12345, "b": "x"}], ["a", "b"]).splitlines()[-1] == "| 0.123 | x |"
