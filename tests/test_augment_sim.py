"""X-ray simulator: Beer–Lambert physics, effective Z, pseudo-colour, determinism and COCO export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from aigclab.augment.coco import export_coco, load_coco, simulate_split
from aigclab.augment.xray_sim import (
    CLASSES,
    MATERIALS,
    MU_LOW,
    Z_REF,
    XraySimConfig,
    attenuation,
    effective_z,
    render,
    render_log,
    simulate_scan,
    superpose,
    transmission,
)
from aigclab.errors import ConfigError, DataError

TINY = XraySimConfig.from_preset("aigclab.augment", "xray-tiny")


@pytest.mark.parametrize("material", MATERIALS)
def test_attenuation_is_monotonic_in_thickness(material: str) -> None:
    t = np.linspace(0.0, 5.0, 50, dtype=np.float32)
    a_low, a_high = attenuation([(material, t)])
    assert np.all(np.diff(a_low) > 0) and np.all(np.diff(a_high) > 0)
    assert np.all(np.diff(transmission(a_high)) < 0)
    k = MATERIALS.index(material)
    np.testing.assert_allclose(transmission(a_low), np.exp(-MU_LOW[k] * t), rtol=1e-6)  # Beer–Lambert


def test_overlapping_layers_multiply_in_transmission() -> None:
    rng = np.random.default_rng(0)
    t1, t2, t3 = rng.uniform(0, 2, (3, 16, 16)).astype(np.float32)
    layers = [("organic", t1), ("metal", t2), ("mixed", t3)]
    a_low, a_high = attenuation(layers)
    for energy, a in ((0, a_low), (1, a_high)):
        product = np.prod([transmission(attenuation([layer])[energy]) for layer in layers], axis=0)
        np.testing.assert_allclose(transmission(a), product, rtol=1e-5)
    # stacking the same material twice equals doubling its thickness
    np.testing.assert_allclose(
        attenuation([("metal", t2), ("metal", t2)])[1], attenuation([("metal", 2 * t2)])[1]
    )


def test_superposed_bags_add_in_log_space() -> None:
    a, b = simulate_scan(TINY, 1), simulate_scan(TINY, 2)
    low, high = superpose(a, b)
    np.testing.assert_allclose(
        transmission(high), transmission(a.log_high) * transmission(b.log_high), rtol=1e-5
    )
    np.testing.assert_allclose(low, a.log_low + b.log_low)


def test_effective_z_recovers_pure_materials_and_orders_mixtures() -> None:
    t = np.ones((1, 1), np.float32)
    for k, m in enumerate(MATERIALS):
        np.testing.assert_allclose(effective_z(*attenuation([(m, 3 * t)])), Z_REF[k], rtol=1e-4)
    mixed = effective_z(*attenuation([("organic", 3 * t), ("metal", 0.05 * t)]))
    assert Z_REF[0] < mixed[0, 0] < Z_REF[2]
    assert effective_z(np.zeros((2, 2)), np.zeros((2, 2))).max() == 0.0  # air has no Z


def _colour(material: str, thickness: float, vendor: str = "vendor-a") -> np.ndarray:
    low, high = attenuation([(material, np.full((1, 1), thickness, np.float32))])
    return render_log(low, high, vendor)[0, 0].astype(int)


def test_pseudo_colour_follows_the_vendor_convention() -> None:
    np.testing.assert_array_equal(_colour("organic", 0.0), [255, 255, 255])  # air is white
    r, g, b = _colour("organic", 4.0)
    assert r > g > b  # orange
    r, g, b = _colour("mixed", 2.0)
    assert g > r and g > b  # green
    r, g, b = _colour("metal", 0.3)
    assert b > r and b > g  # blue
    assert _colour("organic", 8.0).sum() < _colour("organic", 3.0).sum()  # darker = thicker
    np.testing.assert_array_equal(_colour("metal", 3.0), [0, 0, 0])  # impenetrable is black
    assert not np.array_equal(_colour("mixed", 2.0, "vendor-b"), _colour("mixed", 2.0))
    with pytest.raises(ConfigError, match="vendor-a"):
        _colour("metal", 1.0, "vendor-z")


def test_same_seed_same_scan_and_exact_annotations() -> None:
    a, b, c = simulate_scan(TINY, 7), simulate_scan(TINY, 7), simulate_scan(TINY, 8)
    np.testing.assert_array_equal(a.log_high, b.log_high)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.log_high, c.log_high)
    for box, mask in zip(a.boxes, a.masks, strict=True):
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert a.thickness.sum(0)[mask].min() > 0  # the item is physically there
    assert set(a.labels.tolist()) <= set(range(1, len(CLASSES) + 1))
    assert np.all((a.occlusion >= 0) & (a.occlusion <= 1))


def test_all_classes_and_occlusion_levels_occur() -> None:
    scans = simulate_split(XraySimConfig(image_size=96), 30, seed=0, split="train")
    labels = np.concatenate([s.labels for s in scans])
    occlusion = np.concatenate([s.occlusion for s in scans])
    assert set(labels.tolist()) == set(range(1, len(CLASSES) + 1))
    assert occlusion.min() < 0.1 and occlusion.max() > 0.5
    img = render(scans[0], "vendor-a")
    assert img.dtype == np.uint8 and img.shape == (96, 96, 3)


def test_coco_export_round_trips_boxes_and_masks(tmp_path) -> None:
    scans = simulate_split(TINY, 3, seed=0, split="test")
    export_coco(tmp_path, scans, "vendor-b")
    coco = json.loads((tmp_path / "annotations.json").read_text())
    anns = [a for a in coco["annotations"] if a["image_id"] == 0]
    for ann, mask in zip(anns, scans[0].masks, strict=True):
        decoded = mask_utils.decode(mask_utils.frPyObjects(ann["segmentation"], *ann["segmentation"]["size"]))
        np.testing.assert_array_equal(decoded.astype(bool), mask)  # independent RLE decoder
        assert ann["area"] == int(mask.sum())
    samples = load_coco(tmp_path)
    np.testing.assert_array_equal(samples[0].image, render(scans[0], "vendor-b"))
    np.testing.assert_allclose(samples[0].boxes, scans[0].boxes)
    np.testing.assert_array_equal(samples[2].labels, scans[2].labels)
    with pytest.raises(DataError, match=r"annotations\.json"):
        load_coco(tmp_path / "missing")
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(DataError, match="not a COCO"):
        load_coco(tmp_path)
