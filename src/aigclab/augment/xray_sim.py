"""A physically based dual-energy X-ray baggage simulator with pseudo-colour and prohibited items.

Physics (see ``shared/methods`` §5.3): a bag is a stack of material layers, each a thickness map
``t_k(x, y)`` (cm) of one material class (organic, mixed, metal). For the low and high effective beam
energies the log-attenuation is Beer–Lambert's line integral ``A_E = Σ_k μ_k(E)·t_k``, so overlapping
layers *add* in log space and *multiply* in transmission ``I_E = exp(-A_E)``. The ratio
``R = A_low / A_high`` grows with atomic number and gives an effective Z. A scanner "vendor" profile maps
(Z_eff, transmission) to colour: orange organic, green mixed, blue metal, darker = thicker, black where
the beam cannot get through. Two profiles with different colour tables and tone curves model the
cross-scanner shift.

The attenuation coefficients are rounded NIST XCOM values at ~60 keV (low) and ~120 keV (high) for
water-like organics, aluminium/glass ("mixed") and iron ("metal"); they are a toy table, good enough for
the colour physics, not a dosimetry tool.

Example:
    >>> from aigclab.augment.xray_sim import XraySimConfig, simulate_scan, render
    >>> scan = simulate_scan(XraySimConfig(image_size=96), seed=0)
    >>> render(scan, "vendor-a").shape
    (96, 96, 3)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.draw import disk, polygon

from aigclab._config import Config
from aigclab.errors import ConfigError

__all__ = [
    "CLASSES",
    "MATERIALS",
    "VENDORS",
    "Scan",
    "VendorProfile",
    "XraySimConfig",
    "attenuation",
    "effective_z",
    "render",
    "simulate_scan",
    "superpose",
    "transmission",
]

MATERIALS = ("organic", "mixed", "metal")
# Linear attenuation (1/cm) at the low / high effective energies, and the atomic number they stand for.
MU_LOW = np.array([0.21, 0.75, 9.5], np.float32)
MU_HIGH = np.array([0.16, 0.42, 2.6], np.float32)
Z_REF = np.array([7.4, 13.0, 26.0], np.float32)
CLASSES = ("gun", "knife", "scissors", "wrench", "pliers")


class XraySimConfig(Config):
    """Size of the scans and how much clutter and how many threats a bag holds."""

    image_size: int = 160
    clutter: tuple[int, int] = (6, 14)
    items: tuple[int, int] = (1, 3)
    item_size: tuple[float, float] = (0.2, 0.34)  # item length as a fraction of the image side
    occlusion_probs: tuple[float, float, float] = (0.4, 0.35, 0.25)  # levels 0 (clear), 1, 2 (heavy)
    noise: float = 0.01
    blur: float = 0.6


@dataclass(frozen=True)
class VendorProfile:
    """Colour look-up of one scanner: hue anchors along Z_eff, tone curve, and the black level."""

    z_anchors: tuple[float, ...]
    colours: tuple[tuple[int, int, int], ...]
    gamma: float
    saturation_scale: float
    black_level: float


VENDORS: dict[str, VendorProfile] = {
    "vendor-a": VendorProfile(
        z_anchors=(7.0, 9.5, 12.0, 16.0, 20.0, 26.0),
        colours=((235, 140, 40), (235, 140, 40), (80, 175, 60), (80, 175, 60), (40, 90, 215), (40, 90, 215)),
        gamma=1.0,
        saturation_scale=0.35,
        black_level=0.01,
    ),
    "vendor-b": VendorProfile(
        z_anchors=(7.0, 8.5, 11.0, 14.0, 18.0, 26.0),
        colours=(
            (245, 195, 70),
            (225, 160, 60),
            (40, 165, 150),
            (60, 170, 120),
            (110, 80, 225),
            (70, 60, 200),
        ),
        gamma=0.7,
        saturation_scale=0.6,
        black_level=0.03,
    ),
}


@dataclass(frozen=True)
class Scan:
    """One simulated bag: material thickness maps, dual-energy log-attenuation and exact annotations."""

    thickness: np.ndarray  # (3, H, W) cm of organic, mixed, metal
    log_low: np.ndarray  # (H, W) A_low after detector blur and noise
    log_high: np.ndarray  # (H, W) A_high
    boxes: np.ndarray  # (n, 4) float32 x0, y0, x1, y1 (pixel edges, exclusive max)
    labels: np.ndarray  # (n,) int64, 1-based index into CLASSES
    masks: np.ndarray  # (n, H, W) bool
    occlusion: np.ndarray  # (n,) fraction of the item covered by other dense material


def attenuation(layers: Sequence[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Beer–Lambert log-attenuation ``(A_low, A_high)`` of stacked ``(material, thickness)`` layers."""
    a_low = np.zeros_like(layers[0][1], dtype=np.float32)
    a_high = np.zeros_like(a_low)
    for material, t in layers:
        k = MATERIALS.index(material)
        a_low = a_low + MU_LOW[k] * t
        a_high = a_high + MU_HIGH[k] * t
    return a_low, a_high


def transmission(log_attenuation: np.ndarray) -> np.ndarray:
    """Fraction of the beam that gets through: ``exp(-A)``."""
    return np.exp(-log_attenuation)


def effective_z(a_low: np.ndarray, a_high: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Effective atomic number from the dual-energy ratio ``A_low / A_high``; 0 where there is no material."""
    ratio = a_low / np.maximum(a_high, eps)
    z = np.interp(ratio, MU_LOW / MU_HIGH, Z_REF).astype(np.float32)
    return np.where(a_high > eps, z, 0.0).astype(np.float32)


def superpose(a: Scan, b: Scan) -> tuple[np.ndarray, np.ndarray]:
    """Log-attenuation of two bags stacked in the beam (threat-image projection): logs add."""
    return a.log_low + b.log_low, a.log_high + b.log_high


def render(scan: Scan, vendor: str | VendorProfile) -> np.ndarray:
    """Pseudo-colour RGB uint8 image of a scan as a given scanner would show it."""
    return render_log(scan.log_low, scan.log_high, vendor)


def render_log(a_low: np.ndarray, a_high: np.ndarray, vendor: str | VendorProfile) -> np.ndarray:
    """Pseudo-colour from dual-energy log-attenuation maps."""
    profile = _vendor(vendor)
    z = effective_z(a_low, a_high)
    hue = np.stack(
        [np.interp(z, profile.z_anchors, [c[i] for c in profile.colours]) for i in range(3)], -1
    ).astype(np.float32)
    sat = np.clip(a_high / profile.saturation_scale, 0.0, 1.0)[..., None] ** 0.5
    value = transmission(a_high) ** profile.gamma
    rgb = (255.0 * (1.0 - sat) + hue * sat) * value[..., None]
    rgb[transmission(a_high) < profile.black_level] = 0.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _vendor(vendor: str | VendorProfile) -> VendorProfile:
    if isinstance(vendor, VendorProfile):
        return vendor
    if vendor not in VENDORS:
        raise ConfigError(f"unknown scanner vendor {vendor!r}; known: {', '.join(VENDORS)}")
    return VENDORS[vendor]


# ---------------------------------------------------------------------------------------------- shapes
def _layers(h: int, w: int) -> np.ndarray:
    return np.zeros((3, h, w), np.float32)


def _poly(canvas: np.ndarray, material: int, pts: Sequence[tuple[float, float]], t: float) -> None:
    """Add thickness `t` of `material` inside the polygon `pts` given as (x, y) pairs."""
    xs, ys = zip(*pts, strict=True)
    rr, cc = polygon(np.array(ys), np.array(xs), canvas.shape[1:])
    canvas[material, rr, cc] += t


def _disk(canvas: np.ndarray, material: int, cx: float, cy: float, r: float, t: float) -> None:
    rr, cc = disk((cy, cx), r, shape=canvas.shape[1:])
    canvas[material, rr, cc] += t


def _ring(canvas: np.ndarray, material: int, cx: float, cy: float, r: float, t: float) -> None:
    ring = _layers(*canvas.shape[1:])
    _disk(ring, material, cx, cy, r, t)
    _disk(ring, material, cx, cy, 0.55 * r, -t)
    canvas += ring


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


ORG, MIX, MET = 0, 1, 2


def _gun(n: int, rng: np.random.Generator) -> np.ndarray:
    c = _layers(n, n)
    _poly(c, MET, _rect(0.05 * n, 0.25 * n, 0.95 * n, 0.42 * n), rng.uniform(0.5, 0.8))  # slide + barrel
    _poly(c, MET, [(0.62 * n, 0.4 * n), (0.9 * n, 0.4 * n), (0.98 * n, 0.85 * n), (0.72 * n, 0.88 * n)], 0.5)
    _ring(c, MET, 0.55 * n, 0.5 * n, 0.1 * n, 0.2)  # trigger guard
    return c


def _knife(n: int, rng: np.random.Generator) -> np.ndarray:
    c = _layers(n, n)
    _poly(c, MET, [(0.02 * n, 0.5 * n), (0.6 * n, 0.4 * n), (0.6 * n, 0.56 * n)], rng.uniform(0.15, 0.3))
    _poly(c, ORG if rng.random() < 0.6 else MIX, _rect(0.58 * n, 0.42 * n, 0.98 * n, 0.58 * n), 2.5)
    _disk(c, MET, 0.7 * n, 0.5 * n, 0.025 * n + 0.5, 0.3)  # rivets
    _disk(c, MET, 0.86 * n, 0.5 * n, 0.025 * n + 0.5, 0.3)
    return c


def _scissors(n: int, rng: np.random.Generator) -> np.ndarray:
    c = _layers(n, n)
    t = rng.uniform(0.2, 0.35)
    _poly(c, MET, [(0.02 * n, 0.36 * n), (0.6 * n, 0.5 * n), (0.6 * n, 0.56 * n), (0.05 * n, 0.42 * n)], t)
    _poly(c, MET, [(0.02 * n, 0.64 * n), (0.6 * n, 0.44 * n), (0.6 * n, 0.5 * n), (0.05 * n, 0.58 * n)], t)
    handle = ORG if rng.random() < 0.5 else MET
    th = 1.5 if handle == ORG else 0.25
    _ring(c, handle, 0.75 * n, 0.36 * n, 0.14 * n, th)
    _ring(c, handle, 0.75 * n, 0.64 * n, 0.14 * n, th)
    return c


def _wrench(n: int, rng: np.random.Generator) -> np.ndarray:
    c = _layers(n, n)
    t = rng.uniform(0.4, 0.7)
    _poly(c, MET, _rect(0.15 * n, 0.45 * n, 0.85 * n, 0.55 * n), t)
    _disk(c, MET, 0.12 * n, 0.5 * n, 0.12 * n, t)
    _poly(c, MET, _rect(0.0, 0.44 * n, 0.12 * n, 0.56 * n), -t)  # open jaw
    np.clip(c, 0.0, None, out=c)
    _ring(c, MET, 0.88 * n, 0.5 * n, 0.1 * n, t)
    return c


def _pliers(n: int, rng: np.random.Generator) -> np.ndarray:
    c = _layers(n, n)
    t = rng.uniform(0.4, 0.7)
    _poly(c, MET, [(0.02 * n, 0.47 * n), (0.4 * n, 0.4 * n), (0.4 * n, 0.6 * n), (0.02 * n, 0.53 * n)], t)
    _disk(c, MET, 0.42 * n, 0.5 * n, 0.08 * n, t)
    for sign in (-1, 1):
        pts = [(0.42 * n, 0.5 * n), (0.98 * n, (0.5 + sign * 0.2) * n), (0.98 * n, (0.5 + sign * 0.12) * n)]
        _poly(c, MET, [*pts, (0.44 * n, (0.5 + sign * 0.02) * n)], 0.35)
        _poly(c, ORG, [(0.6 * n, (0.5 + sign * 0.07) * n), *pts[1:], (0.6 * n, (0.5 + sign * 0.12) * n)], 1.2)
    return c


SHAPES = {"gun": _gun, "knife": _knife, "scissors": _scissors, "wrench": _wrench, "pliers": _pliers}


# ----------------------------------------------------------------------------------------------- bags
def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Positive texture around 1 (clothing folds, liquid level)."""
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma)
    return np.clip(1.0 + field / (field.std() + 1e-6) * 0.35, 0.2, 2.0)


def _bag(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Bag shell (fabric, thick rim, trolley rods); returns layers and the inside mask."""
    c = _layers(s, s)
    bw, bh = rng.uniform(0.78, 0.96, 2) * s
    x0, y0 = rng.uniform(0, s - bw), rng.uniform(0, s - bh)
    inside = np.zeros((s, s), bool)
    rr, cc = polygon(np.array([y0, y0, y0 + bh, y0 + bh]), np.array([x0, x0 + bw, x0 + bw, x0]), (s, s))
    inside[rr, cc] = True
    inside = ndimage.binary_opening(inside, iterations=3)
    rim = inside & ~ndimage.binary_erosion(inside, iterations=3)
    c[ORG] += inside * rng.uniform(0.4, 1.0) + rim * rng.uniform(2.0, 4.0)
    if rng.random() < 0.7:  # trolley handle rods along the long side
        for fx in (0.15, 0.85):
            x = x0 + fx * bw
            _poly(c, MET if rng.random() < 0.5 else MIX, _rect(x - 1, y0 + 2, x + 1, y0 + bh - 2), 0.15)
    return c, inside


def _clutter_item(rng: np.random.Generator, s: int, cx: float, cy: float) -> np.ndarray:
    """One everyday object: clothes, bottle, electronics, keys/coins or a cable."""
    c = _layers(s, s)
    kind = rng.choice(["clothes", "clothes", "bottle", "electronics", "small-metal", "cable"])
    if kind == "clothes":
        rr, cc = _ellipse(rng, s, cx, cy, rng.uniform(0.12, 0.3) * s)
        tex = _smooth_noise(rng, s, s, 3.0)
        c[ORG, rr, cc] += rng.uniform(2.0, 8.0) * tex[rr, cc]
    elif kind == "bottle":
        w, h = rng.uniform(0.06, 0.1) * s, rng.uniform(0.15, 0.3) * s
        _poly(c, ORG, _rotated_rect(rng, cx, cy, w, h), rng.uniform(4.0, 8.0))
    elif kind == "electronics":
        w, h = rng.uniform(0.15, 0.35) * s, rng.uniform(0.1, 0.25) * s
        _poly(c, MIX, _rotated_rect(rng, cx, cy, w, h), rng.uniform(0.4, 1.5))
        for _ in range(int(rng.integers(2, 6))):
            ox, oy = rng.uniform(-0.4, 0.4, 2) * (w, h)
            _poly(
                c, MET, _rotated_rect(rng, cx + ox, cy + oy, 3 + 4 * rng.random(), 2 + 3 * rng.random()), 0.15
            )
    elif kind == "small-metal":
        for _ in range(int(rng.integers(1, 5))):
            ox, oy = rng.uniform(-8, 8, 2)
            _disk(c, MET, cx + ox, cy + oy, rng.uniform(1.5, 4.0), rng.uniform(0.1, 0.3))
    else:
        pts = np.cumsum(rng.normal(0, 0.06 * s, (8, 2)), 0) + np.array([cx, cy])
        for (xa, ya), (xb, yb) in itertools.pairwise(pts):
            _poly(c, MET, [(xa, ya), (xb, yb), (xb + 1.2, yb + 1.2), (xa + 1.2, ya + 1.2)], 0.05)
            _poly(c, ORG, [(xa, ya), (xb, yb), (xb + 2.5, yb + 2.5), (xa + 2.5, ya + 2.5)], 0.5)
    return c


def _ellipse(
    rng: np.random.Generator, s: int, cx: float, cy: float, r: float
) -> tuple[np.ndarray, np.ndarray]:
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    radii = r * rng.uniform(0.6, 1.2, 16)
    rot = rng.uniform(0.5, 1.5)
    return polygon(cy + radii * np.sin(angles), cx + rot * radii * np.cos(angles), (s, s))


def _rotated_rect(
    rng: np.random.Generator, cx: float, cy: float, w: float, h: float
) -> list[tuple[float, float]]:
    a = rng.uniform(0, np.pi)
    ca, sa = np.cos(a), np.sin(a)
    corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in corners]


def _place_item(
    rng: np.random.Generator, cfg: XraySimConfig, label: int, inside: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a threat at a random pose; returns its (3, S, S) layers and exact mask."""
    s = cfg.image_size
    n = max(8, int(rng.uniform(*cfg.item_size) * s))
    local = SHAPES[CLASSES[label - 1]](n, rng)
    if rng.random() < 0.5:
        local = local[:, ::-1]
    local = ndimage.rotate(local, rng.uniform(0, 360), axes=(2, 1), order=0, reshape=True)
    local = np.clip(local, 0.0, None) * rng.uniform(0.8, 1.2)
    occupied = local.sum(0) > 0
    ys, xs = np.nonzero(occupied)
    local, occupied = (
        local[:, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],
        occupied[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],
    )
    h, w = occupied.shape
    iy, ix = np.nonzero(inside[h // 2 : h // 2 + s - h + 1, w // 2 : w // 2 + s - w + 1])  # centre in the bag
    k = int(rng.integers(len(iy)))
    y, x = int(iy[k]), int(ix[k])
    layers, mask = _layers(s, s), np.zeros((s, s), bool)
    layers[:, y : y + h, x : x + w] = local
    mask[y : y + h, x : x + w] = occupied
    return layers, mask


def simulate_scan(cfg: XraySimConfig, seed: int | np.random.Generator) -> Scan:
    """Simulate one bag with clutter and prohibited items; the same seed gives the same scan."""
    rng = np.random.default_rng(seed)
    s = cfg.image_size
    background, inside = _bag(rng, s)
    iy, ix = np.nonzero(inside)
    for _ in range(int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))):
        k = int(rng.integers(len(iy)))
        background += _clutter_item(rng, s, float(ix[k]), float(iy[k]))
    labels, masks, item_layers = [], [], []
    for _ in range(int(rng.integers(cfg.items[0], cfg.items[1] + 1))):
        label = int(rng.integers(1, len(CLASSES) + 1))
        layers, mask = _place_item(rng, cfg, label, inside)
        level = int(rng.choice(3, p=cfg.occlusion_probs))
        ys, xs = np.nonzero(mask)
        for _ in range(level):  # occluders centred on the item
            j = int(rng.integers(len(ys)))
            background += _clutter_item(rng, s, float(xs[j]), float(ys[j]))
        labels.append(label)
        masks.append(mask)
        item_layers.append(layers)
    background *= inside
    thickness = background + sum(item_layers)
    a_low, a_high = attenuation([(m, thickness[k]) for k, m in enumerate(MATERIALS)])
    other_high = attenuation([(m, background[k]) for k, m in enumerate(MATERIALS)])[1]
    occlusion = np.array([(other_high[m] > 0.5).mean() for m in masks], np.float32)
    a_low, a_high = (_detector(a, cfg, rng) for a in (a_low, a_high))
    mask_arr = np.stack(masks)
    return Scan(
        thickness=thickness.astype(np.float32),
        log_low=a_low,
        log_high=a_high,
        boxes=np.array([_mask_box(m) for m in mask_arr], np.float32),
        labels=np.array(labels, np.int64),
        masks=mask_arr,
        occlusion=occlusion,
    )


def _detector(a: np.ndarray, cfg: XraySimConfig, rng: np.random.Generator) -> np.ndarray:
    """Detector blur (point spread) and read-out noise on a log-attenuation map."""
    noisy = ndimage.gaussian_filter(a, cfg.blur) + rng.normal(0, cfg.noise, a.shape)
    return np.clip(noisy, 0.0, None).astype(np.float32)


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
