"""Image degradations as pure functions, and seeded degradation objects built from them.

Pure functions take an RGB uint8 array and explicit parameters and return a new array; the input is
never modified. A :class:`Degradation` first samples its parameters from a ``numpy.random.Generator``
and then applies the pure function, so the same seed always gives the same output.

Example:
    >>> import numpy as np
    >>> from aigclab.degradations import create_degradation
    >>> img = np.zeros((32, 32, 3), np.uint8)
    >>> deg = create_degradation("jpeg", quality=(30, 100))
    >>> out = deg(img, np.random.default_rng(0))
    >>> out.shape
    (32, 32, 3)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from aigclab._registry import Registry
from aigclab.errors import AigclabError

__all__ = [
    "OSN_PROFILES",
    "Chain",
    "Degradation",
    "OSNProfile",
    "create_degradation",
    "crop",
    "gaussian_blur",
    "gaussian_noise",
    "jpeg",
    "list_degradations",
    "osn",
    "paired_views",
    "parse_degradation",
    "resize",
]

KERNELS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


# ---------------------------------------------------------------- pure functions


def jpeg(img: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """Encode with Pillow's libjpeg at `quality` (1-95+) and decode again."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), subsampling=_SUBSAMPLING[subsampling])
    return np.asarray(Image.open(buf).convert("RGB"))


def resize(img: np.ndarray, size: tuple[int, int], kernel: str = "bilinear") -> np.ndarray:
    """Resize to (height, width) with a named kernel."""
    h, w = size
    return np.asarray(Image.fromarray(img).resize((int(w), int(h)), KERNELS[kernel]))


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return img.copy()
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=float(sigma))))


def gaussian_noise(img: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Add a given noise field (in 0-255 units) and clip."""
    return np.clip(np.round(img.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def crop(img: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    return img[top : top + height, left : left + width].copy()


@dataclass(frozen=True)
class OSNProfile:
    """A platform-like re-sharing chain: downscale to `max_side`, then JPEG at `quality`.

    The numbers are approximations of what platforms are commonly reported to do, not measurements.
    """

    name: str
    max_side: int
    quality: int
    subsampling: str = "4:2:0"
    kernel: str = "bilinear"


OSN_PROFILES: dict[str, OSNProfile] = {
    "facebook": OSNProfile("facebook", max_side=2048, quality=72),
    "instagram": OSNProfile("instagram", max_side=1080, quality=78),
    "twitter": OSNProfile("twitter", max_side=4096, quality=85),
    "wechat": OSNProfile("wechat", max_side=1280, quality=55, kernel="bicubic"),
}


def osn(img: np.ndarray, profile: OSNProfile) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) > profile.max_side:
        s = profile.max_side / max(h, w)
        img = resize(img, (max(1, round(h * s)), max(1, round(w * s))), profile.kernel)
    return jpeg(img, profile.quality, profile.subsampling)


# ---------------------------------------------------------------- seeded objects

Range = float | tuple[float, float]


def _draw(value: Range, rng: np.random.Generator, integer: bool = False) -> float:
    if isinstance(value, tuple | list):
        lo, hi = value
        return float(rng.integers(int(lo), int(hi) + 1)) if integer else float(rng.uniform(lo, hi))
    return float(value)


class Degradation:
    """Sample parameters with `sample(img, rng)`, apply them with `apply(img, **params)`."""

    name = "identity"

    def sample(self, img: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        return {}

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return img.copy()

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(img, **self.sample(img, rng))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{self.name}({args})"


class JPEG(Degradation):
    name = "jpeg"

    def __init__(self, quality: Range = 75, subsampling: str = "4:2:0"):
        if subsampling not in _SUBSAMPLING:
            raise AigclabError(f"jpeg subsampling must be one of {list(_SUBSAMPLING)}, got {subsampling!r}")
        self.quality, self.subsampling = quality, subsampling

    def sample(self, img, rng):
        return {"quality": int(_draw(self.quality, rng, integer=True))}

    def apply(self, img, quality):
        return jpeg(img, quality, self.subsampling)


class Resize(Degradation):
    name = "resize"

    def __init__(self, scale: Range = 0.5, kernel: str = "bilinear", restore: bool = False):
        if kernel not in KERNELS:
            raise AigclabError(f"resize kernel must be one of {list(KERNELS)}, got {kernel!r}")
        self.scale, self.kernel, self.restore = scale, kernel, restore

    def sample(self, img, rng):
        return {"scale": _draw(self.scale, rng)}

    def apply(self, img, scale):
        h, w = img.shape[:2]
        out = resize(img, (max(1, round(h * scale)), max(1, round(w * scale))), self.kernel)
        return resize(out, (h, w), self.kernel) if self.restore else out


class Blur(Degradation):
    name = "blur"

    def __init__(self, sigma: Range = 1.0):
        self.sigma = sigma

    def sample(self, img, rng):
        return {"sigma": _draw(self.sigma, rng)}

    def apply(self, img, sigma):
        return gaussian_blur(img, sigma)


class Noise(Degradation):
    name = "noise"

    def __init__(self, sigma: Range = 5.0):
        self.sigma = sigma

    def sample(self, img, rng):
        return {"noise": rng.normal(0.0, _draw(self.sigma, rng), size=img.shape)}

    def apply(self, img, noise):
        return gaussian_noise(img, noise)


class Crop(Degradation):
    name = "crop"

    def __init__(self, size: int = 224):
        self.size = size

    def sample(self, img, rng):
        h, w = img.shape[:2]
        ch, cw = min(self.size, h), min(self.size, w)
        return {
            "top": int(rng.integers(0, h - ch + 1)),
            "left": int(rng.integers(0, w - cw + 1)),
            "height": ch,
            "width": cw,
        }

    def apply(self, img, top, left, height, width):
        return crop(img, top, left, height, width)


class OSN(Degradation):
    name = "osn"

    def __init__(self, profile: str = "facebook"):
        if profile not in OSN_PROFILES:
            raise AigclabError(
                f"unknown social-network profile {profile!r}; known: {', '.join(OSN_PROFILES)}"
            )
        self.profile = profile

    def apply(self, img):
        return osn(img, OSN_PROFILES[self.profile])


class Chain(Degradation):
    """Apply several degradations in order; each samples from the same generator in turn."""

    name = "chain"

    def __init__(self, steps: list[Degradation]):
        self.steps = steps

    def __call__(self, img, rng):
        for step in self.steps:
            img = step(img, rng)
        return img


DEGRADATIONS: Registry[Degradation] = Registry("degradation")
for _cls in (JPEG, Resize, Blur, Noise, Crop, OSN):
    DEGRADATIONS.register(_cls.name)(_cls)
for _name in OSN_PROFILES:
    DEGRADATIONS.register(f"osn-{_name}")(lambda _p=_name: OSN(_p))


def create_degradation(name: str, **params: Any) -> Degradation:
    return DEGRADATIONS.create(name, **params)


def list_degradations() -> list[str]:
    return DEGRADATIONS.list()


def parse_degradation(spec: str) -> Degradation:
    """Parse ``"jpeg:quality=30-100+blur:sigma=1"`` into a degradation (ranges as ``lo-hi``)."""
    steps = []
    for part in spec.split("+"):
        name, _, args = part.partition(":")
        params: dict[str, Any] = {}
        for item in filter(None, args.split(",")):
            key, eq, raw = item.partition("=")
            if not eq:
                raise AigclabError(f"degradation {spec!r}: expected key=value, got {item!r}")
            params[key] = _parse_value(raw)
        steps.append(create_degradation(name.strip(), **params))
    return steps[0] if len(steps) == 1 else Chain(steps)


def _parse_value(raw: str) -> Any:
    lo, dash, hi = raw.partition("-")
    try:
        if dash and lo:
            return (float(lo), float(hi))
        return float(raw) if any(c in raw for c in ".e") else int(raw)
    except ValueError:
        return raw


def paired_views(
    img: np.ndarray, degradation: Degradation, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A raw copy and a degraded copy of one image (for compression-paired training)."""
    return img.copy(), degradation(img, rng)
