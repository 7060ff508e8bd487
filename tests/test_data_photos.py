"""Real photo patches: every photo loads offline, splits are disjoint by photo, sizes are selectable."""

from __future__ import annotations

import numpy as np

from aigclab.data.photos import PHOTOS, load_photo, photo_patches


def test_photos_load_and_split_by_photo():
    assert len(PHOTOS) >= 20
    train = {n for n, p in PHOTOS.items() if p.split == "train"}
    test = {n for n, p in PHOTOS.items() if p.split == "test"}
    assert train and test and not train & test
    assert {"motorcycle_left", "motorcycle_right"} <= test  # two views of one scene stay together
    img = load_photo("grace_hopper")
    assert img.dtype == np.uint8 and img.shape == (600, 512, 3)


def test_patches_are_deterministic_and_come_from_their_split():
    a = photo_patches("test", size=64, max_per_photo=20)
    b = photo_patches("test", size=64, max_per_photo=20)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape[1:] == (64, 64, 3)
    assert {PHOTOS[p].split for p in a.photos} == {"test"}
    assert set(a.scales.tolist()) <= {1.0, 0.5, 0.25}
    assert (a.images.reshape(len(a.images), -1).std(axis=1) >= 4.0).all()
