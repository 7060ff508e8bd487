"""The detection main job end to end on the shipped embedded default, and protocol hygiene."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.data.mini import few_shot_episodes, load_mini
from aigclab.io import content_hash


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detect")
    test = load_mini("test", generators=["ddpm"])
    reals, fakes = np.flatnonzero(test.labels == 0)[:3], np.flatnonzero(test.labels == 1)[:3]
    for i, idx in enumerate([*reals, *fakes]):
        Image.fromarray(test.images[idx]).save(root / f"{'real' if i < 3 else 'fake'}_{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "empty.jpg").write_bytes(b"")
    return root


def test_detect_scores_good_files_and_reports_bad_ones(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "res.jsonl"
    result = CliRunner().invoke(app, ["detect", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    scored = [r for r in rows if "probability" in r]
    skipped = {Path(r["file"]).name: r["skipped"] for r in rows if "skipped" in r}
    assert len(scored) == 6 and set(skipped) == {"broken.png", "empty.jpg"}
    assert "empty" in skipped["empty.jpg"] and all(0 <= r["probability"] <= 1 for r in scored)
    assert {r["verdict"] for r in scored} <= {"real", "fake", "uncertain"}
    with (tmp_path / "res.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6
    assert "skipped" in result.output and "broken.png" in result.output


def test_support_folder_changes_the_scores(folder: Path, tmp_path: Path) -> None:
    support = tmp_path / "support"
    train = load_mini("train", generators=["ddpm"])
    for label, name in ((0, "real"), (1, "fake/ddpm")):
        (support / name).mkdir(parents=True)
        for i in np.flatnonzero(train.labels == label)[:4]:
            Image.fromarray(train.images[i]).save(support / name / f"{i}.png")
    base, extra = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    runner = CliRunner()
    assert runner.invoke(app, ["detect", str(folder), "--out", str(base)]).exit_code == 0
    assert (
        runner.invoke(app, ["detect", str(folder), "--support", str(support), "--out", str(extra)]).exit_code
        == 0
    )
    p = lambda f: [json.loads(x).get("probability") for x in f.read_text().splitlines()]  # noqa: E731
    assert p(base) != p(extra)


def test_few_shot_support_never_overlaps_the_queries() -> None:
    for ep in few_shot_episodes(generator="vae", k=8):
        assert set(ep.support.ids.tolist()).isdisjoint(ep.query.ids.tolist())
        support_hashes = {content_hash(img) for img in ep.support.images}
        assert support_hashes.isdisjoint(content_hash(img) for img in ep.query.images)
