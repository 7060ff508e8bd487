"""Forensic cues: pure functions from an RGB uint8 image to a number and a short finding.

Every cue is computed on the detector's patch grid (at most 16 tiles of `size` pixels, averaged), so
full-size photos and 32-pixel benchmark patches are measured on the same footing, and the numbers can be
compared with a reference distribution measured on real training patches (see `explain.reference`).

Cues (each `score` has a fixed meaning; `explain.reference` says how unusual a value is for a real photo):
- ``spectral_peaks``: strongest periodic peak of the noise residual's spectrum relative to its ring's
  median (log ratio). Up-sampling layers (transposed convolutions, nearest/bilinear up-sampling) leave
  such peaks, typically at 1/2 and 1/4 cycles per pixel.
- ``noise_residual``: log standard deviation of the high-pass residual (image minus its 3x3 median);
  generators often produce too little or oddly structured sensor-like noise.
- ``jpeg_grid``: strength of an 8x8 block grid in pixel differences (best of the 8 phases, relative to
  the other phases); evidence of JPEG compression, and with a second grid phase, of re-compression.
- ``colour``: colourfulness (Hasler and Suesstrunk 2003) with saturation statistics.

`attribution_map` is not a scalar cue: it is an occlusion map of a detector's score, saved as a heat map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = [
    "CUES",
    "Cue",
    "attribution_map",
    "colour",
    "compute_cues",
    "jpeg_grid",
    "noise_residual",
    "spectral_peaks",
]


@dataclass(frozen=True)
class Cue:
    name: str
    score: float
    finding: str
    values: dict[str, float] = field(default_factory=dict)


def _grey(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _tiles(img: np.ndarray, size: int, max_tiles: int = 16) -> np.ndarray:
    from aigclab.detect.base import to_patches

    return to_patches(img, size, max_tiles)


def _spectrum_peak(grey: np.ndarray) -> tuple[float, float, float]:
    """(log peak/ring-median ratio, fx, fy) of the windowed residual spectrum, DC ring excluded."""
    res = grey - ndimage.gaussian_filter(grey, 1.0)
    h, w = res.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    mag = np.abs(np.fft.fftshift(np.fft.fft2(res * win))) + 1e-9
    fy, fx = np.meshgrid(
        np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij"
    )
    radius = np.hypot(fx, fy)
    rings = np.minimum((radius / 0.5 * 8).astype(int), 11)
    med = np.array([np.median(mag[rings == r]) if (rings == r).any() else 1.0 for r in range(12)])
    ratio = np.log(mag / med[rings])
    ratio[radius < 0.1] = -np.inf  # ignore the low-frequency centre
    i = int(np.argmax(ratio))
    return float(ratio.flat[i]), float(abs(fx.flat[i])), float(abs(fy.flat[i]))


def spectral_peaks(img: np.ndarray, size: int = 32) -> Cue:
    peaks = [_spectrum_peak(_grey(t)) for t in _tiles(img, size)]
    score = float(np.mean([p[0] for p in peaks]))
    best = max(peaks)
    at = f"({best[1]:.2f}, {best[2]:.2f}) cycles/pixel"
    hint = (
        " — the frequency of 2x/4x up-sampling"
        if min(abs(best[1] - f) + abs(best[2] - g) for f in (0, 0.25, 0.5) for g in (0, 0.25, 0.5)) < 0.04
        else ""
    )
    return Cue(
        "spectral_peaks",
        score,
        f"strongest periodic residual peak is {np.exp(best[0]):.1f}x its ring's median at {at}{hint}",
        {"log_peak_ratio": score, "fx": best[1], "fy": best[2]},
    )


def noise_residual(img: np.ndarray, size: int = 32) -> Cue:
    stds, corrs = [], []
    for t in _tiles(img, size):
        x = t.astype(np.float64)
        res = x - ndimage.median_filter(x, size=(3, 3, 1))
        stds.append(res.std())
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.corrcoef(res.reshape(-1, 3).T)
        corrs.append(np.nanmean(c[np.triu_indices(3, 1)]) if np.isfinite(c).all() else 1.0)
    score = float(np.log(np.mean(stds) + 1e-3))
    return Cue(
        "noise_residual",
        score,
        f"high-pass noise has std {np.mean(stds):.2f} grey levels, cross-channel correlation {np.mean(corrs):.2f}",
        {"log_std": score, "channel_correlation": float(np.mean(corrs))},
    )


def _grid_strength(grey: np.ndarray) -> tuple[float, int]:
    dx = np.abs(np.diff(grey, axis=1)).mean(axis=0)
    dy = np.abs(np.diff(grey, axis=0)).mean(axis=1)
    phases = np.array([dx[p::8].mean() + dy[p::8].mean() for p in range(8)])
    best = int(np.argmax(phases))
    return float(phases[best] / (np.median(phases) + 1e-6) - 1.0), best


def _ghost_dip(tile: np.ndarray, qualities: tuple[int, ...] = (50, 60, 70, 80, 90)) -> tuple[float, int]:
    """JPEG ghost: re-compression error dips at a previous quality (relative dip depth, that quality)."""
    from aigclab.degradations import jpeg

    err = np.array([np.abs(tile.astype(np.float64) - jpeg(tile, q)).mean() for q in qualities])
    dips = [(0.5 * (err[i - 1] + err[i + 1]) - err[i]) / (err[i] + 1e-6) for i in range(1, len(err) - 1)]
    i = int(np.argmax(dips))
    return float(dips[i]), qualities[i + 1]


def jpeg_grid(img: np.ndarray, size: int = 32) -> Cue:
    tiles = _tiles(img, size)
    score = float(np.mean([_grid_strength(_grey(t))[0] for t in tiles]))
    ghosts = [_ghost_dip(t) for t in tiles]
    dip = float(np.mean([g[0] for g in ghosts]))
    quality = int(np.median([g[1] for g in ghosts]))
    finding = f"8x8 block-grid strength {score:.2f} (0 = none)"
    if score > 0.1:
        finding += "; the image has been JPEG-compressed"
    if dip > 0.05:
        finding += f"; re-compression error dips near quality {quality} (a JPEG ghost: it was JPEG-compressed at about that quality before)"
    return Cue(
        "jpeg_grid",
        score,
        finding,
        {"grid_strength": score, "ghost_dip": dip, "ghost_quality": float(quality)},
    )


def colour(img: np.ndarray, size: int = 32) -> Cue:
    vals = []
    for t in _tiles(img, size):
        x = t.astype(np.float64)
        rg, yb = x[..., 0] - x[..., 1], 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
        colourful = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
        mx, mn = x.max(axis=2), x.min(axis=2)
        sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
        vals.append((colourful, sat.mean(), (sat > 0.9).mean()))
    c, s, hi = (float(v) for v in np.mean(vals, axis=0))
    return Cue(
        "colour",
        c,
        f"colourfulness {c:.1f}, mean saturation {s:.2f}, {100 * hi:.1f}% near-fully saturated pixels",
        {"colourfulness": c, "saturation": s, "oversaturated": hi},
    )


CUES: dict[str, Callable[[np.ndarray, int], Cue]] = {
    "spectral_peaks": spectral_peaks,
    "noise_residual": noise_residual,
    "jpeg_grid": jpeg_grid,
    "colour": colour,
}


def compute_cues(img: np.ndarray, size: int = 32) -> dict[str, Cue]:
    return {name: fn(img, size) for name, fn in CUES.items()}


def _occlusion(img: np.ndarray, score_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    size = img.shape[0]
    base = float(score_fn(img[None])[0])
    win = max(2, size // 4)
    fill = img.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    corners = [(y, x) for y in range(0, size - win + 1, win // 2) for x in range(0, size - win + 1, win // 2)]
    occluded = np.repeat(img[None], len(corners), axis=0)
    for k, (y, x) in enumerate(corners):
        occluded[k, y : y + win, x : x + win] = fill
    drops = base - score_fn(occluded)
    heat, count = np.zeros((size, size)), np.zeros((size, size))
    for (y, x), d in zip(corners, drops, strict=True):
        heat[y : y + win, x : x + win] += d
        count[y : y + win, x : x + win] += 1
    return heat / np.maximum(count, 1)


def _tile_scores(img: np.ndarray, score_fn: Callable[[np.ndarray], np.ndarray], size: int) -> np.ndarray:
    h, w = img.shape[:2]
    step = max(size // 2, int(np.ceil(np.sqrt(h * w / 1024))))  # at most ~1,024 tiles
    corners = [(y, x) for y in range(0, h - size + 1, step) for x in range(0, w - size + 1, step)]
    scores = score_fn(np.stack([img[y : y + size, x : x + size] for y, x in corners]))
    heat, count = np.zeros((h, w)), np.zeros((h, w))
    for (y, x), s in zip(corners, scores, strict=True):
        heat[y : y + size, x : x + size] += s
        count[y : y + size, x : x + size] += 1
    return heat / np.maximum(count, 1)


def attribution_map(
    img: np.ndarray, score_fn: Callable[[np.ndarray], np.ndarray], size: int = 32
) -> np.ndarray:
    """Attribution map of a patch scorer, scaled to [0, 1], shape (H, W).

    Images up to one patch (resized to it): the score drop when a quarter-size window (half-window stride)
    is replaced by the image mean (occlusion). Larger images: each patch's own P(fake) on an overlapping
    grid (the local evidence map).
    """
    from aigclab.degradations import resize

    h, w = img.shape[:2]
    if h <= size or w <= size:
        small = _occlusion(resize(img, (size, size), "bicubic") if (h, w) != (size, size) else img, score_fn)
        heat = np.asarray(
            resize(
                np.repeat(
                    ((small - small.min()) / (np.ptp(small) + 1e-12) * 255).astype(np.uint8)[..., None], 3, 2
                ),
                (h, w),
                "bilinear",
            )[..., 0],
            np.float64,
        )
    else:
        heat = _tile_scores(img, score_fn, size)
    lo, hi = heat.min(), heat.max()
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
