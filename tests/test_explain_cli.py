"""`aigclab explain` end to end on the embedded default (cues backend)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.data.mini import load_mini


def test_explain_writes_records_and_heat_maps(tmp_path: Path) -> None:
    test = load_mini("test", generators=["upgan"])
    good = tmp_path / "fake.png"
    Image.fromarray(test.images[-1]).save(good)
    (tmp_path / "bad.png").write_bytes(b"nope")
    out, heat = tmp_path / "e.jsonl", tmp_path / "heat"
    result = CliRunner().invoke(
        app, ["explain", str(good), str(tmp_path / "bad.png"), "--out", str(out), "--heatmaps", str(heat)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["explanation"]["verdict"]["label"] in ("real", "fake", "uncertain") and rows[1]["skipped"]
    assert set(rows[0]["cues"]) == {"spectral_peaks", "noise_residual", "jpeg_grid", "colour"}
    assert Image.open(rows[0]["heatmap"]).size == (256, 256)
    assert "No language model was used" in result.output
