"""Degradations: real encoder behaviour, determinism, purity, parsing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aigclab.degradations import (
    OSN_PROFILES,
    Chain,
    create_degradation,
    jpeg,
    osn,
    paired_views,
    parse_degradation,
    resize,
)
from aigclab.errors import AigclabError, UnknownNameError

IMG = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_jpeg_matches_pillow_encoder_and_loses_more_at_low_quality() -> None:
    buf = io.BytesIO()
    Image.fromarray(IMG).save(buf, format="JPEG", quality=50)
    np.testing.assert_array_equal(jpeg(IMG, 50), np.asarray(Image.open(buf)))
    err = {q: np.abs(jpeg(IMG, q).astype(int) - IMG).mean() for q in (95, 75, 30)}
    assert err[95] < err[75] < err[30]


def test_resize_and_restore_keep_shape() -> None:
    assert resize(IMG, (24, 32), "bicubic").shape == (24, 32, 3)
    out = create_degradation("resize", scale=0.5, kernel="nearest", restore=True)(
        IMG, np.random.default_rng(0)
    )
    assert out.shape == IMG.shape


def test_blur_reduces_high_frequency_energy() -> None:
    out = create_degradation("blur", sigma=2.0)(IMG, np.random.default_rng(0))
    assert (
        np.abs(np.diff(out.astype(int), axis=1)).mean() < np.abs(np.diff(IMG.astype(int), axis=1)).mean() / 2
    )


def test_osn_profile_downscales_large_images() -> None:
    big = np.zeros((3000, 1500, 3), np.uint8)
    assert osn(big, OSN_PROFILES["instagram"]).shape == (1080, 540, 3)
    assert osn(IMG, OSN_PROFILES["facebook"]).shape == IMG.shape


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    st.sampled_from(
        [
            "jpeg:quality=30-100",
            "resize:scale=0.3-0.9",
            "blur:sigma=0-3",
            "noise:sigma=1-9",
            "crop:size=20",
            "osn-wechat",
            "jpeg:quality=40+blur:sigma=0.5-1.5",
        ]
    ),
    st.integers(0, 2**31),
)
def test_same_seed_same_output_and_input_untouched(spec: str, seed: int) -> None:
    before = IMG.copy()
    deg = parse_degradation(spec)
    a, b = deg(IMG, np.random.default_rng(seed)), deg(IMG, np.random.default_rng(seed))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(IMG, before)


def test_random_quality_is_sampled_in_range() -> None:
    deg = create_degradation("jpeg", quality=(30, 40))
    qs = {deg.sample(IMG, np.random.default_rng(s))["quality"] for s in range(50)}
    assert qs <= set(range(30, 41)) and len(qs) > 5


def test_parse_chain_and_errors() -> None:
    chain = parse_degradation("jpeg:quality=75+resize:scale=0.5,kernel=bicubic")
    assert isinstance(chain, Chain) and len(chain.steps) == 2
    with pytest.raises(UnknownNameError, match="known: blur"):
        parse_degradation("sharpen")
    with pytest.raises(AigclabError, match="expected key=value"):
        parse_degradation("jpeg:75")
    with pytest.raises(AigclabError, match="kernel must be one of"):
        parse_degradation("resize:kernel=magic")


def test_paired_views_are_raw_and_degraded_copies() -> None:
    raw, comp = paired_views(IMG, create_degradation("jpeg", quality=30), np.random.default_rng(0))
    np.testing.assert_array_equal(raw, IMG)
    assert raw is not IMG and not np.array_equal(comp, IMG)
