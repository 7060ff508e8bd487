"""COCO-format export and import of simulated X-ray datasets (boxes, RLE masks, occlusion).

A dataset folder holds ``train/`` (rendered by the training scanner) and one ``test-<vendor>/`` per
scanner, each with ``images/*.png`` and ``annotations.json`` (COCO: ``bbox`` as ``[x, y, w, h]``,
uncompressed RLE ``segmentation``, plus an ``occlusion`` fraction per object).

Example:
    >>> from aigclab.augment.coco import simulate_split
    >>> from aigclab.augment.xray_sim import XraySimConfig
    >>> len(simulate_split(XraySimConfig(image_size=64), 2, seed=0, split="train"))
    2
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aigclab.augment.transforms import DetSample
from aigclab.augment.xray_sim import CLASSES, Scan, XraySimConfig, render, simulate_scan
from aigclab.errors import DataError
from aigclab.io import load_image

__all__ = ["build_dataset", "export_coco", "load_coco", "rle_encode", "simulate_split", "to_samples"]

SPLIT_IDS = {"train": 0, "test": 1, "val": 2}


def simulate_split(cfg: XraySimConfig, n: int, seed: int, split: str) -> list[Scan]:
    """`n` scans of a split; splits use disjoint seed streams, so test bags never appear in training."""
    return [simulate_scan(cfg, np.random.default_rng([seed, SPLIT_IDS[split], i])) for i in range(n)]


def to_samples(scans: Sequence[Scan], vendor: str) -> list[DetSample]:
    """Render scans with one scanner's colour profile as detection samples."""
    return [DetSample(render(s, vendor), s.boxes, s.labels) for s in scans]


def rle_encode(mask: np.ndarray) -> dict[str, list[int]]:
    """COCO uncompressed RLE (column-major runs, starting with a run of zeros)."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def export_coco(out_dir: str | Path, scans: Sequence[Scan], vendor: str) -> Path:
    """Write ``images/*.png`` and ``annotations.json`` for scans rendered by `vendor`."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, scan in enumerate(scans):
        name = f"images/{i:05d}.png"
        Image.fromarray(render(scan, vendor)).save(out / name)
        h, w = scan.log_high.shape
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        for box, label, mask, occ in zip(scan.boxes, scan.labels, scan.masks, scan.occlusion, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(mask.sum()),
                    "segmentation": rle_encode(mask),
                    "iscrowd": 0,
                    "occlusion": round(float(occ), 4),
                }
            )
    categories = [{"id": k + 1, "name": c, "supercategory": "prohibited"} for k, c in enumerate(CLASSES)]
    coco = {
        "info": {"scanner": vendor},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    (out / "annotations.json").write_text(json.dumps(coco))
    return out


def build_dataset(
    out_dir: str | Path,
    cfg: XraySimConfig,
    n_train: int,
    n_test: int,
    seed: int,
    train_vendor: str = "vendor-a",
) -> dict[str, Path]:
    """Simulate and export ``train/`` (training scanner) and ``test-<vendor>/`` for every scanner."""
    from aigclab.augment.xray_sim import VENDORS

    out = Path(out_dir)
    paths = {"train": export_coco(out / "train", simulate_split(cfg, n_train, seed, "train"), train_vendor)}
    test = simulate_split(cfg, n_test, seed, "test")
    for vendor in VENDORS:
        paths[f"test-{vendor}"] = export_coco(out / f"test-{vendor}", test, vendor)
    cfg.to_json(out / "sim_config.json")
    return paths


def load_coco(folder: str | Path) -> list[DetSample]:
    """Read a COCO folder (``annotations.json`` + images) as detection samples."""
    folder = Path(folder)
    ann_path = folder / "annotations.json"
    try:
        coco = json.loads(ann_path.read_text())
        images = {im["id"]: im for im in coco["images"]}
        per_image: dict[int, list[dict]] = {i: [] for i in images}
        for ann in coco["annotations"]:
            per_image[ann["image_id"]].append(ann)
    except FileNotFoundError:
        raise DataError(
            f"{ann_path}: not found (build a dataset with `aigclab augment xray build`)"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{ann_path}: not a COCO annotation file ({err!r})") from None
    samples = []
    for image_id, info in images.items():
        anns = per_image[image_id]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
        labels = np.array([a["category_id"] for a in anns], np.int64)
        samples.append(DetSample(load_image(folder / info["file_name"]), boxes.reshape(-1, 4), labels))
    return samples
