"""Background Mixup (BGM) and the classic MixUp / CutMix baselines as seeded detection transforms.

Every transform first samples its parameters with an explicit ``numpy.random.Generator`` (``sample``),
then applies a pure function from :mod:`aigclab.augment.functional` (``apply``); calling it does both.
Mixing transforms take a *donor*: another training scan with its own boxes.

**BGM design** (arXiv 2412.00460 publishes no code; these are our choices, following its abstract:
"Mixup at patch level" that brings in "contour information of baggage" and "variation of material"):

* The image is split into a ``g x g`` grid, ``g`` drawn from ``grids``; each cell is mixed with
  probability ``patch_prob`` and its own weight ``lam ~ U(lam_range)``. Cells give the patch-level,
  spatially varying mix that carries the donor's bag contours, clutter and material colours.
* Only *background* moves: pixels inside the scan's own boxes (plus a small margin) keep their exact
  values, and pixels inside the donor's boxes are never brought in, so no unlabelled threat appears and
  the boxes and labels come back unchanged. The weight ramps up over ``feather`` pixels away from
  those boxes, so an unmixed rectangle cannot act as a shortcut cue for "an object is here". Foreground objects themselves are not augmented, which keeps
  BGM orthogonal to foreground-focused augmentations.
* ``log_space=True`` ("bgm-log") is transmission-aware: X-ray pixels are products of transmissions, so
  the donor's background is *stacked* in the beam by adding its per-channel log-attenuation
  ``-log((v + 0.5) / 256)`` times ``lam`` (Beer–Lambert: logs add, transmissions multiply) instead of
  blending intensities. It darkens where the donor holds material and leaves air as air.
* ``source="self"`` ("bgm-self") takes the donor regions from the *same* scan instead of another one
  (the v3 abstract's "mixes background patches across regions"): the donor is the scan shifted
  circularly by a random offset of a quarter to three quarters of its size, so every cell is mixed with
  a distant region of its own bag; the scan's own objects, at both places, are kept out as before.
* BGM is applied to an image with probability ``p``, before flip and zoom (which then move image and
  boxes together), so it composes with the usual geometric detection augmentations.

Example:
    >>> import numpy as np
    >>> from aigclab.augment.transforms import DetSample, create_augmentation
    >>> img = np.full((32, 32, 3), 230, np.uint8)
    >>> s = DetSample(img, np.array([[4, 4, 12, 12]], np.float32), np.array([1]))
    >>> out = create_augmentation("bgm", p=1.0)(s, s, np.random.default_rng(0))
    >>> out.boxes.tolist()
    [[4.0, 4.0, 12.0, 12.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from aigclab._registry import Registry
from aigclab.augment import functional as F

__all__ = [
    "AUGMENTATIONS",
    "BackgroundMixup",
    "CutMix",
    "DetSample",
    "DetectionAugment",
    "MixUp",
    "NoMix",
    "create_augmentation",
    "list_augmentations",
]


class DetSample(NamedTuple):
    """A detection training sample: RGB uint8 image, ``(n, 4)`` xyxy boxes, ``(n,)`` labels."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


class MixTransform(Protocol):
    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> Any: ...

    def apply(self, params: Any, sample: DetSample, donor: DetSample) -> DetSample: ...

    def __call__(self, sample: DetSample, donor: DetSample, rng: np.random.Generator) -> DetSample: ...


class _Mix:
    def __call__(self, sample: DetSample, donor: DetSample, rng: np.random.Generator) -> DetSample:
        return self.apply(self.sample(rng, sample.image.shape[:2]), sample, donor)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NoMix(_Mix):
    """Identity (the "none" baseline)."""

    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> None:
        return None

    def apply(self, params: None, sample: DetSample, donor: DetSample) -> DetSample:
        return sample


@dataclass(frozen=True)
class MixUp(_Mix):
    """Whole-image MixUp with ``lam ~ Beta(alpha, alpha)``; both images' boxes are kept."""

    p: float = 0.5
    alpha: float = 8.0

    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> float | None:
        return float(rng.beta(self.alpha, self.alpha)) if rng.random() < self.p else None

    def apply(self, params: float | None, sample: DetSample, donor: DetSample) -> DetSample:
        if params is None:
            return sample
        return DetSample(*F.mixup(*sample, *donor, lam=params))


@dataclass(frozen=True)
class CutMix(_Mix):
    """Paste a donor rectangle whose area fraction is ``Beta(alpha, alpha)``; boxes are clipped."""

    p: float = 0.5
    alpha: float = 1.0
    min_visible: float = 0.4

    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
        if rng.random() >= self.p:
            return None
        h, w = shape
        side = np.sqrt(rng.beta(self.alpha, self.alpha))
        rh, rw = int(h * side), int(w * side)
        y0, x0 = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        return x0, y0, x0 + rw, y0 + rh

    def apply(
        self, params: tuple[int, int, int, int] | None, sample: DetSample, donor: DetSample
    ) -> DetSample:
        if params is None:
            return sample
        return DetSample(*F.cutmix(*sample, *donor, rect=params, min_visible=self.min_visible))


@dataclass(frozen=True)
class BgmParams:
    grid: int
    selected: np.ndarray  # (grid, grid) bool
    lam: np.ndarray  # (grid, grid) float
    shift: tuple[int, int] = (0, 0)  # (dy, dx) of the donor region, for source="self"


@dataclass(frozen=True)
class BackgroundMixup(_Mix):
    """Patch-level background mixing from another scan; foreground and boxes stay exact."""

    p: float = 0.5
    grids: tuple[int, ...] = (2, 3, 4)
    patch_prob: float = 0.5
    lam_range: tuple[float, float] = (0.3, 0.7)
    log_space: bool = False
    margin: int = 2
    feather: int = 6
    source: Literal["other", "self"] = "other"

    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> BgmParams | None:
        if rng.random() >= self.p:
            return None
        g = int(rng.choice(self.grids))
        selected, lam = rng.random((g, g)) < self.patch_prob, rng.uniform(*self.lam_range, (g, g))
        if self.source == "other":
            return BgmParams(g, selected, lam)
        h, w = shape
        shift = (int(rng.integers(h // 4, 3 * h // 4 + 1)), int(rng.integers(w // 4, 3 * w // 4 + 1)))
        return BgmParams(g, selected, lam, shift)

    def apply(self, params: BgmParams | None, sample: DetSample, donor: DetSample) -> DetSample:
        if params is None:
            return sample
        weights = F.patch_weights(sample.image.shape[:2], params.grid, params.selected, params.lam)
        donor_image, donor_keep = donor.image, None
        if self.source == "self":
            own = F.box_mask(sample.image.shape[:2], sample.boxes, self.margin)
            donor_image = np.roll(sample.image, params.shift, axis=(0, 1))
            donor_keep = np.roll(own, params.shift, axis=(0, 1))
        img, boxes = F.background_mixup(
            sample.image,
            sample.boxes,
            donor_image,
            donor.boxes,
            weights,
            self.log_space,
            self.margin,
            self.feather,
            donor_keep,
        )
        return DetSample(img, boxes, sample.labels.copy())


@dataclass(frozen=True)
class AugParams:
    mix: Any
    flip: bool
    scale: float


@dataclass(frozen=True)
class DetectionAugment:
    """A mixing transform followed by horizontal flip and zoom, sampled up front as one `AugParams`."""

    mix: MixTransform
    flip_p: float = 0.5
    scale_range: tuple[float, float] = (0.8, 1.2)

    def sample(
        self, rng: np.random.Generator, shape: tuple[int, int], mix_rng: np.random.Generator | None = None
    ) -> AugParams:
        """Draw the parameters; with `mix_rng` the mixing draws come from it and flip/zoom from `rng`,
        so runs that differ only in the mixing transform get the same flips and zooms."""
        mix = self.mix.sample(rng if mix_rng is None else mix_rng, shape)
        return AugParams(mix, bool(rng.random() < self.flip_p), float(rng.uniform(*self.scale_range)))

    def apply(self, params: AugParams, sample: DetSample, donor: DetSample) -> DetSample:
        img, boxes, labels = self.mix.apply(params.mix, sample, donor)
        if params.flip:
            img, boxes = F.hflip(img, boxes)
        if params.scale != 1.0:
            img, boxes, labels = F.zoom(img, boxes, labels, params.scale)
        return DetSample(img, boxes, labels)

    def __call__(self, sample: DetSample, donor: DetSample, rng: np.random.Generator) -> DetSample:
        return self.apply(self.sample(rng, sample.image.shape[:2]), sample, donor)


AUGMENTATIONS: Registry[MixTransform] = Registry("augmentation")


@AUGMENTATIONS.register("none")
def _none() -> MixTransform:
    return NoMix()


@AUGMENTATIONS.register("mixup")
def _mixup(**kw: Any) -> MixTransform:
    return MixUp(**kw)


@AUGMENTATIONS.register("cutmix")
def _cutmix(**kw: Any) -> MixTransform:
    return CutMix(**kw)


@AUGMENTATIONS.register("bgm")
def _bgm(**kw: Any) -> MixTransform:
    return BackgroundMixup(**kw)


@AUGMENTATIONS.register("bgm-log")
def _bgm_log(**kw: Any) -> MixTransform:
    return BackgroundMixup(**({"log_space": True} | kw))


@AUGMENTATIONS.register("bgm-self")
def _bgm_self(**kw: Any) -> MixTransform:
    return BackgroundMixup(**({"source": "self"} | kw))


def create_augmentation(name: str, **overrides: Any) -> MixTransform:
    """Build a mixing transform by name (none, mixup, cutmix, bgm, bgm-log, bgm-self)."""
    return AUGMENTATIONS.create(name, **overrides)


def list_augmentations() -> list[str]:
    return AUGMENTATIONS.list()
