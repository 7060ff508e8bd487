"""`aigclab detect train`: data loading, clear errors, and a trained file that the main job loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.data.mini import load_mini
from aigclab.detect import load_detector
from aigclab.detect.train import load_labeled, parse_overrides

TINY_CNN = ["--set", "epochs=1", "--set", "channels=[8,8,16,16]"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 real and 8 fake AIGC-Mini patches, plus one 64x64 real image (4 patches) and one broken file."""
    root = tmp_path_factory.mktemp("train")
    train = load_mini("train", generators=["ddpm"])
    for label, sub in ((0, "real"), (1, "fake/ddpm")):
        (root / sub).mkdir(parents=True)
        for i in np.flatnonzero(train.labels == label)[:8]:
            Image.fromarray(train.images[i]).save(root / sub / f"{i}.png")
    big = np.concatenate([np.concatenate([train.images[0], train.images[1]], 1)] * 2, 0)
    Image.fromarray(big).save(root / "real" / "big.png")
    (root / "fake" / "ddpm" / "broken.png").write_bytes(b"not a png")
    return root


def test_load_labeled_cuts_patches_and_skips_bad_files(folder: Path) -> None:
    lines: list[str] = []
    data = load_labeled(folder, patch_size=32, log=lines.append)
    assert data.images.shape == (8 + 4 + 8, 32, 32, 3)
    assert int(data.labels.sum()) == 8 and set(data.generators.tolist()) == {"real", "ddpm"}
    assert any("broken.png" in line for line in lines)


def test_train_rejects_a_folder_without_fakes(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "real" / "a.png")
    result = CliRunner().invoke(
        app,
        ["detect", "train", "cnndet-tiny", "--data", str(tmp_path), "--out", str(tmp_path / "m.safetensors")],
    )
    assert result.exit_code != 0
    assert "no fake images" in str(result.exception) and str(tmp_path) in str(result.exception)
    assert not (tmp_path / "m.safetensors").exists()


def test_train_rejects_unlabeled_data_for_supervised_detectors(folder: Path, tmp_path: Path) -> None:
    args = ["detect", "train", "cnndet-tiny", "--data", str(folder), "--unlabeled", str(folder / "real")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "m.safetensors"), *TINY_CNN])
    assert result.exit_code != 0 and "--unlabeled" in str(result.exception)


def test_trained_file_loads_in_the_main_job(folder: Path, tmp_path: Path) -> None:
    model = tmp_path / "cnn.safetensors"
    runner = CliRunner()
    result = runner.invoke(
        app, ["detect", "train", "cnndet-tiny", "--labeled", str(folder), "--out", str(model), *TINY_CNN]
    )
    assert result.exit_code == 0, result.output
    det = load_detector(model)
    assert det.config.epochs == 1 and det.config.seed == 0  # type: ignore[attr-defined]
    out = tmp_path / "scores.jsonl"
    result = runner.invoke(app, ["detect", str(folder / "real"), "--detector", str(model), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {Path(r["file"]).name: r["probability"] for r in map(json.loads, out.read_text().splitlines())}
    img = np.asarray(Image.open(folder / "real" / "big.png").convert("RGB"))
    assert rows["big.png"] == pytest.approx(float(det.score([img])[0]), abs=1e-4)


def test_parse_overrides() -> None:
    assert parse_overrides(["epochs=2", "paired_ratio=0.2", "b2e=false", "name=x"]) == {
        "epochs": 2,
        "paired_ratio": 0.2,
        "b2e": False,
        "name": "x",
    }
