"""Real photographs shipped inside the scikit-image, scikit-learn and matplotlib wheels, cut into patches.

Every photo belongs to exactly one split (`PHOTOS[name].split`): test photos never give a training
patch, so no test patch shares a photo with training. Grey photos are replicated to three channels.
Each photo is resized to several scales (Pillow box filter) and cut on a regular grid; near-flat
patches (pixel std below `min_std`) are dropped.

Example:
    >>> from aigclab.data.photos import photo_patches
    >>> p = photo_patches("test", size=32)
    >>> p.images.shape[1:], p.images.dtype
    ((32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["PHOTOS", "Patches", "Photo", "load_photo", "photo_patches"]

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Photo:
    """One real photograph: where it comes from and which split owns it."""

    name: str
    source: str
    split: Split


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _motorcycle(view: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return skimage.data.stereo_motorcycle()[view]

    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(str(path)).convert("RGB"))


_TRAIN = (
    "astronaut chelsea rocket hubble_deep_field retina coins moon brick grass text page cell microaneurysms"
)
_TEST = "coffee immunohistochemistry camera clock gravel"
_LOADERS: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    **{n: ("scikit-image", _skimage(n)) for n in (_TRAIN + " " + _TEST).split()},
    "motorcycle_left": ("scikit-image", _motorcycle(0)),
    "motorcycle_right": ("scikit-image", _motorcycle(1)),
    "china": ("scikit-learn", _sklearn(0)),
    "flower": ("scikit-learn", _sklearn(1)),
    "grace_hopper": ("matplotlib", _grace_hopper),
}
_TEST_NAMES = {*_TEST.split(), "motorcycle_left", "motorcycle_right", "flower"}  # both stereo views: test

PHOTOS: dict[str, Photo] = {
    name: Photo(name, source, "test" if name in _TEST_NAMES else "train")
    for name, (source, _) in sorted(_LOADERS.items())
}


@cache
def load_photo(name: str) -> np.ndarray:
    """The photo `name` as RGB uint8 (H, W, 3)."""
    img = np.asarray(_LOADERS[name][1]())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


@dataclass(frozen=True)
class Patches:
    """Patches with the photo each came from (`photos[i]`) and the scale it was cut at."""

    images: np.ndarray
    photos: np.ndarray
    scales: np.ndarray


def _cut(img: np.ndarray, size: int, stride: int) -> np.ndarray:
    h, w = img.shape[:2]
    tops = range(0, h - size + 1, stride)
    lefts = range(0, w - size + 1, stride)
    return (
        np.stack([img[t : t + size, s : s + size] for t in tops for s in lefts])
        if tops and lefts
        else np.zeros((0, size, size, 3), np.uint8)
    )


def photo_patches(
    split: Split,
    size: int = 32,
    scales: tuple[float, ...] = (1.0, 0.5, 0.25),
    stride: int | None = None,
    min_std: float = 4.0,
    max_per_photo: int | None = None,
) -> Patches:
    """All patches of the photos in `split`, in a fixed order (photo name, scale, row, column).

    Args:
        split: "train" or "test".
        size: patch side in pixels (32 or 64 are the usual choices).
        scales: resize factors applied to each photo before cutting.
        stride: grid step; default `size` (no overlap).
        min_std: drop patches whose pixel standard deviation is below this (flat background).
        max_per_photo: keep at most this many patches per photo, evenly spaced in the fixed order.
    """
    stride = stride or size
    images, photos, scale_of = [], [], []
    for name, photo in PHOTOS.items():
        if photo.split != split:
            continue
        img = load_photo(name)
        cuts, cut_scales = [], []
        for scale in scales:
            h, w = round(img.shape[0] * scale), round(img.shape[1] * scale)
            small = (
                np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BOX)) if scale != 1 else img
            )
            cut = _cut(small, size, stride)
            cut = cut[cut.reshape(len(cut), size * size * 3).std(axis=1) >= min_std]
            cuts.append(cut)
            cut_scales += [scale] * len(cut)
        all_cuts = np.concatenate(cuts)
        keep = np.arange(len(all_cuts))
        if max_per_photo is not None and len(keep) > max_per_photo:
            keep = np.linspace(0, len(all_cuts) - 1, max_per_photo).round().astype(int)
        images.append(all_cuts[keep])
        photos += [name] * len(keep)
        scale_of += [cut_scales[i] for i in keep]
    return Patches(np.concatenate(images), np.array(photos), np.array(scale_of, np.float32))
