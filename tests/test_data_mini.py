"""The shipped AIGC-Mini benchmark: loads in seconds, splits disjoint by photo and by sample, protocols."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from aigclab.data.mini import (
    COMPRESSIONS,
    compress,
    decode_mosaic,
    encode_mosaic,
    few_shot_episodes,
    load_mini,
    mini_generators,
    mini_manifest,
    mini_protocols,
    paired_training_views,
    real_set,
)
from aigclab.data.photos import PHOTOS
from aigclab.errors import DataError
from aigclab.io import content_hash


@pytest.fixture(scope="module")
def test_split():
    return load_mini("test")


@pytest.fixture(scope="module")
def train_split():
    return load_mini("train")


def _row_hashes(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(img.tobytes()).hexdigest() for img in images}


def test_shipped_benchmark_matches_its_manifest(test_split, train_split):
    man = mini_manifest()
    assert len(man["generators"]) >= 7 and len({g["family"] for g in man["generators"].values()}) >= 7
    for name, entry in man["generators"].items():
        assert entry["test"]["n"] >= 1000
        fakes = test_split.images[test_split.generators == name]
        assert content_hash(fakes) == entry["test"]["sha256"]
        assert content_hash(train_split.images[train_split.generators == name]) == entry["train"]["sha256"]
    real = test_split.images[test_split.generators == "real"]
    assert content_hash(real) == man["real"]["test"]["sha256"]


def test_real_splits_are_disjoint_by_photo():
    _, train_photos = real_set("train")
    _, test_photos = real_set("test")
    assert not set(train_photos) & set(test_photos)
    assert {PHOTOS[p].split for p in train_photos} == {"train"}
    assert {PHOTOS[p].split for p in test_photos} == {"test"}


def test_splits_are_disjoint_by_sample(test_split, train_split):
    # ids are "<generator>/<split>/<index>", so comparing them across splits proves nothing: they must be
    # unique within a split, and the splits are compared by image content below.
    for split in (test_split, train_split):
        assert len(set(split.ids)) == len(split.ids)
    for gen in ["real", *mini_generators()]:
        tr = _row_hashes(train_split.images[train_split.generators == gen])
        te = _row_hashes(test_split.images[test_split.generators == gen])
        assert not tr & te, gen


def test_few_shot_support_is_disjoint_from_queries():
    prot = mini_protocols()
    assert prot["few_shot"]["k"] == [1, 4, 8] and len(prot["few_shot"]["seeds"]) >= 3
    for ep in few_shot_episodes(generator="ddpm"):
        assert len(ep.support) == 2 * ep.k and ep.support.labels.sum() == ep.k
        assert not set(ep.support.ids) & set(ep.query.ids)
        assert not _row_hashes(ep.support.images) & _row_hashes(ep.query.images)
    a = few_shot_episodes(generator="vae", k=4, seed=1)[0]
    b = few_shot_episodes(generator="vae", k=4, seed=1)[0]
    np.testing.assert_array_equal(a.support.images, b.support.images)


def test_cross_generator_protocol_trains_on_one_family():
    cross = mini_protocols()["cross_generator"]
    assert cross["train"] == [mini_manifest()["train_generator"]]
    assert set(cross["test"]) == set(mini_generators()) - set(cross["train"])


def test_compression_is_regenerated_deterministically():
    imgs = load_mini("test", generators=[], real=True).images[:20]
    for cond in COMPRESSIONS:
        a, b = compress(imgs, cond), compress(imgs, cond)
        np.testing.assert_array_equal(a, b)
        assert a.shape == imgs.shape and not np.array_equal(a, imgs)
    q95 = np.abs(compress(imgs, "jpeg95").astype(int) - imgs).mean()
    q30 = np.abs(compress(imgs, "jpeg30").astype(int) - imgs).mean()
    assert q30 > q95
    raw, comp = paired_training_views(imgs)
    np.testing.assert_array_equal(raw, imgs)
    assert comp.shape == imgs.shape


def test_mosaic_storage_round_trips():
    imgs = np.random.default_rng(0).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_mosaic(encode_mosaic(imgs), 70, 32), imgs)


def test_bad_selection_names_the_problem():
    with pytest.raises(DataError, match="no generator 'biggan'"):
        load_mini("test", generators=["biggan"])
    with pytest.raises(DataError, match="no few-shot episode"):
        few_shot_episodes(generator="ddpm", k=3)
