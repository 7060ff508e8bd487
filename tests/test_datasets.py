"""Folder and manifest datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aigclab.datasets import ImageDataset, load_records, read_manifest, scan_folder
from aigclab.errors import DataError


def _img(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _img(tmp_path / "real" / "a.png", 10)
    _img(tmp_path / "real" / "sub" / "b.png", 20)
    _img(tmp_path / "fake" / "gan" / "c.png", 30)
    _img(tmp_path / "fake" / "ddpm" / "d.png", 40)
    (tmp_path / "fake" / "ddpm" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "real" / "notes.txt").write_text("ignored")
    return tmp_path


def test_scan_folder_labels_from_layout(folder: Path) -> None:
    recs = scan_folder(folder)
    assert [(Path(r.path).name, r.label, r.generator) for r in recs] == [
        ("a.png", 0, "real"),
        ("b.png", 0, "real"),
        ("broken.png", 1, "ddpm"),
        ("d.png", 1, "ddpm"),
        ("c.png", 1, "gan"),
    ]


def test_dataset_yields_images_and_reports_skipped(folder: Path) -> None:
    ds = ImageDataset(scan_folder(folder))
    items = list(ds)
    assert [(int(img[0, 0, 0]), y, g) for img, y, g in items] == [
        (10, 0, "real"),
        (20, 0, "real"),
        (40, 1, "ddpm"),
        (30, 1, "gan"),
    ]
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("broken.png")
    assert ds.generators == ["ddpm", "gan"]


def test_csv_and_jsonl_manifests_agree(folder: Path) -> None:
    (folder / "m.csv").write_text(
        "path,label,generator,split\nreal/a.png,real,,train\nfake/gan/c.png,1,gan,test\n"
    )
    (folder / "m.jsonl").write_text(
        '{"path": "real/a.png", "label": 0, "split": "train"}\n{"path": "fake/gan/c.png", "label": "fake", "generator": "gan", "split": "test"}\n'
    )
    assert read_manifest(folder / "m.csv") == read_manifest(folder / "m.jsonl")
    test_only = load_records(folder / "m.csv", split="test")
    assert [(r.generator, r.label) for r in test_only] == [("gan", 1)]


def test_content_hash_is_stable_and_distinct(folder: Path) -> None:
    a, b = scan_folder(folder)[:2]
    assert a.hash() == a.hash() and a.hash() != b.hash()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("path,label\nx.png,maybe\n", r"m\.csv:2: label 'maybe'"),
        ("file,label\nx.png,0\n", "needs 'path' and 'label'"),
    ],
)
def test_bad_manifest_rows_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        read_manifest(tmp_path / "m.csv")


def test_folder_without_layout_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected a 'real/'"):
        scan_folder(tmp_path)
