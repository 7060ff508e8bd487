"""Background Mixup and the MixUp / CutMix baselines: exact boxes, physics of the log mode, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigclab.augment import functional as F
from aigclab.augment.coco import simulate_split, to_samples
from aigclab.augment.transforms import (
    BackgroundMixup,
    BgmParams,
    CutMix,
    DetectionAugment,
    DetSample,
    create_augmentation,
    list_augmentations,
)
from aigclab.augment.xray_sim import XraySimConfig
from aigclab.errors import UnknownNameError

SCANS = to_samples(simulate_split(XraySimConfig(image_size=64), 4, seed=3, split="train"), "vendor-a")


def _all_cells(grid: int, lam: float) -> BgmParams:
    return BgmParams(grid, np.ones((grid, grid), bool), np.full((grid, grid), lam))


@pytest.mark.parametrize("log_space", [False, True])
def test_bgm_keeps_boxes_labels_and_foreground_exact(log_space: bool) -> None:
    sample, donor = SCANS[0], SCANS[1]
    bgm = BackgroundMixup(p=1.0, log_space=log_space, margin=0)
    out = bgm.apply(_all_cells(2, 0.5), sample, donor)
    np.testing.assert_array_equal(out.boxes, sample.boxes)
    np.testing.assert_array_equal(out.labels, sample.labels)
    fg = F.box_mask((64, 64), sample.boxes)
    np.testing.assert_array_equal(out.image[fg], sample.image[fg])  # objects untouched
    donor_fg = F.box_mask((64, 64), donor.boxes) & ~fg
    np.testing.assert_array_equal(out.image[donor_fg], sample.image[donor_fg])  # no donor threats brought in
    background = ~(fg | F.box_mask((64, 64), donor.boxes))
    assert np.abs(out.image[background].astype(int) - sample.image[background]).mean() > 1.0


def test_bgm_linear_is_a_convex_blend_and_log_mode_adds_attenuation() -> None:
    img = np.full((8, 8, 3), 200, np.uint8)
    donor = np.full((8, 8, 3), 100, np.uint8)
    none = np.zeros((0, 4), np.float32)
    w = np.full((8, 8), 0.25, np.float32)
    linear, _ = F.background_mixup(img, none, donor, none, w)
    assert np.all(linear == 175)
    logged, _ = F.background_mixup(img, none, donor, none, w, log_space=True)
    expected = 256 * (200.5 / 256) * (100.5 / 256) ** 0.25 - 0.5  # transmissions multiply
    assert np.all(np.abs(logged.astype(float) - expected) <= 0.5)
    air = np.full((8, 8, 3), 255, np.uint8)
    np.testing.assert_array_equal(F.background_mixup(air, none, air, none, w, log_space=True)[0], air)
    # adding material never brightens a pixel
    real, _ = F.background_mixup(SCANS[0].image, none, SCANS[2].image, none, np.full((64, 64), 0.7), True)
    assert np.all(real <= SCANS[0].image)


def test_patch_weights_cover_the_selected_cells_only() -> None:
    sel = np.array([[True, False], [False, True]])
    w = F.patch_weights((6, 4), 2, sel, np.array([[0.3, 0.9], [0.9, 0.6]]))
    assert w.shape == (6, 4)
    np.testing.assert_allclose(w[:3, :2], 0.3)
    np.testing.assert_allclose(w[:3, 2:], 0.0)
    np.testing.assert_allclose(w[3:, 2:], 0.6)


@pytest.mark.parametrize("name", ["none", "mixup", "cutmix", "bgm", "bgm-log"])
def test_same_rng_same_output_and_inputs_untouched(name: str) -> None:
    aug = DetectionAugment(create_augmentation(name, **({} if name == "none" else {"p": 1.0})))
    before = SCANS[0].image.copy(), SCANS[0].boxes.copy()
    a = aug(SCANS[0], SCANS[1], np.random.default_rng(5))
    b = aug(SCANS[0], SCANS[1], np.random.default_rng(5))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.image.shape == SCANS[0].image.shape and a.image.dtype == np.uint8
    assert len(a.boxes) == len(a.labels)
    np.testing.assert_array_equal(SCANS[0].image, before[0])
    np.testing.assert_array_equal(SCANS[0].boxes, before[1])


def test_mixup_keeps_both_images_boxes() -> None:
    out = create_augmentation("mixup", p=1.0)(SCANS[0], SCANS[1], np.random.default_rng(0))
    np.testing.assert_array_equal(out.boxes, np.concatenate([SCANS[0].boxes, SCANS[1].boxes]))


def test_cutmix_drops_covered_and_clips_pasted_boxes() -> None:
    img, donor = np.zeros((20, 20, 3), np.uint8), np.full((20, 20, 3), 9, np.uint8)
    own = DetSample(img, np.array([[0, 0, 10, 10], [12, 12, 20, 20]], np.float32), np.array([1, 2]))
    don = DetSample(donor, np.array([[8, 8, 12, 12], [0, 10, 4, 20]], np.float32), np.array([3, 4]))
    out = CutMix().apply((10, 10, 20, 20), own, don)
    assert np.all(out.image[10:, 10:] == 9) and np.all(out.image[:10] == 0)
    # own box 1 fully visible, own box 2 fully covered; donor box 1 has 1/4 inside, donor box 2 none
    np.testing.assert_array_equal(out.boxes, [[0, 0, 10, 10]])
    np.testing.assert_array_equal(out.labels, [1])
    out = CutMix(min_visible=0.25).apply((10, 10, 20, 20), own, don)
    np.testing.assert_array_equal(out.boxes, [[0, 0, 10, 10], [10, 10, 12, 12]])


def test_bgm_composes_with_flip_and_zoom() -> None:
    sample, donor = SCANS[0], SCANS[1]
    aug = DetectionAugment(BackgroundMixup(p=1.0), flip_p=1.0, scale_range=(1.0, 1.0))
    out = aug(sample, donor, np.random.default_rng(1))
    flipped = F.hflip(sample.image, sample.boxes)
    np.testing.assert_array_equal(out.boxes, flipped[1])
    fg = F.box_mask((64, 64), flipped[1])
    np.testing.assert_array_equal(out.image[fg], flipped[0][fg])


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.5, 1.5), x0=st.integers(0, 40), y0=st.integers(0, 40), size=st.integers(4, 20))
def test_zoom_moves_boxes_with_the_pixels(scale: float, x0: int, y0: int, size: int) -> None:
    img = np.full((64, 64, 3), 255, np.uint8)
    img[y0 : y0 + size, x0 : x0 + size] = 0
    boxes = np.array([[x0, y0, x0 + size, y0 + size]], np.float32)
    out, new_boxes, labels = F.zoom(img, boxes, np.array([1]), scale)
    assert out.shape == img.shape and len(new_boxes) == len(labels)
    if len(new_boxes):
        bx0, by0, bx1, by1 = new_boxes[0]
        inner = out[int(np.ceil(by0)) + 1 : int(by1) - 1, int(np.ceil(bx0)) + 1 : int(bx1) - 1]
        assert inner.size == 0 or inner.max() < 128  # the dark square is where its box says
    np.testing.assert_array_equal(F.zoom(img, boxes, np.array([1]), 1.0)[1], boxes)


def test_hflip_twice_is_identity() -> None:
    img, boxes = F.hflip(*F.hflip(SCANS[0].image, SCANS[0].boxes))
    np.testing.assert_array_equal(img, SCANS[0].image)
    np.testing.assert_array_equal(boxes, SCANS[0].boxes)


def test_registry_lists_the_baselines_and_rejects_unknown_names() -> None:
    assert list_augmentations() == ["bgm", "bgm-log", "bgm-self", "cutmix", "mixup", "none"]
    assert create_augmentation("bgm-log").log_space  # type: ignore[attr-defined]
    with pytest.raises(UnknownNameError, match="bgm-log"):
        create_augmentation("mosaic")


def test_bgm_self_mixes_regions_of_the_same_scan_and_keeps_its_objects() -> None:
    sample, other = SCANS[0], SCANS[1]
    bgm = create_augmentation("bgm-self", p=1.0, margin=0)
    params = bgm.sample(np.random.default_rng(3), (64, 64))
    params = BgmParams(2, np.ones((2, 2), bool), np.full((2, 2), 0.5), params.shift)
    out = bgm.apply(params, sample, other)
    # the donor scan plays no part: the regions come from the sample itself
    blank = type(other)(np.zeros_like(other.image), other.boxes, other.labels)
    np.testing.assert_array_equal(bgm.apply(params, sample, blank).image, out.image)
    np.testing.assert_array_equal(out.boxes, sample.boxes)
    fg = F.box_mask((64, 64), sample.boxes)
    np.testing.assert_array_equal(out.image[fg], sample.image[fg])
    shifted_fg = np.roll(fg, params.shift, axis=(0, 1))
    np.testing.assert_array_equal(out.image[shifted_fg], sample.image[shifted_fg])  # no copy of its items
    assert np.abs(out.image.astype(int) - sample.image).mean() > 1.0
