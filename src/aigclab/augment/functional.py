"""Pure mixing and geometry functions for detection images with boxes (no randomness inside).

Images are ``(H, W, 3)`` uint8 arrays, boxes ``(n, 4)`` float32 ``x0, y0, x1, y1`` in pixels, labels
``(n,)`` int64. Every function returns new arrays and never mutates its inputs. Random parameters are
drawn by the transforms in :mod:`aigclab.augment.transforms`.

Example:
    >>> import numpy as np
    >>> img = np.full((8, 8, 3), 200, np.uint8)
    >>> boxes = np.array([[1, 1, 3, 3]], np.float32)
    >>> hflip(img, boxes)[1].tolist()
    [[5.0, 1.0, 7.0, 3.0]]
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "background_mixup",
    "box_mask",
    "cutmix",
    "from_log",
    "hflip",
    "mixup",
    "patch_weights",
    "to_log",
    "zoom",
]

# Transmission of a pixel value: T = (v + 0.5) / 256, so 255 (air) is almost 1 and 0 is dark but finite.
_EPS_LOG = np.log(256.0)


def to_log(img: np.ndarray) -> np.ndarray:
    """Per-channel log-attenuation ``-log T`` of a pseudo-colour image (0 for air, ~6.2 for black)."""
    return -np.log((img.astype(np.float32) + 0.5) / 256.0)


def from_log(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(256.0 * np.exp(-a) - 0.5), 0, 255).astype(np.uint8)


def box_mask(shape: tuple[int, int], boxes: np.ndarray, margin: int = 0) -> np.ndarray:
    """Boolean ``(H, W)`` mask that is True inside any box (grown by `margin` pixels)."""
    mask = np.zeros(shape, bool)
    h, w = shape
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        ya, yb = max(0, int(np.floor(y0)) - margin), min(h, int(np.ceil(y1)) + margin)
        xa, xb = max(0, int(np.floor(x0)) - margin), min(w, int(np.ceil(x1)) + margin)
        mask[ya:yb, xa:xb] = True
    return mask


def patch_weights(shape: tuple[int, int], grid: int, selected: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Per-pixel mixing weight: ``lam[i, j]`` on selected cells of a ``grid x grid`` split, else 0."""
    h, w = shape
    ys = np.minimum(np.arange(h) * grid // h, grid - 1)
    xs = np.minimum(np.arange(w) * grid // w, grid - 1)
    cell = np.where(selected, lam, 0.0).astype(np.float32)
    return cell[ys[:, None], xs[None, :]]


def background_mixup(
    img: np.ndarray,
    boxes: np.ndarray,
    donor: np.ndarray,
    donor_boxes: np.ndarray,
    weights: np.ndarray,
    log_space: bool = False,
    margin: int = 2,
    feather: int = 6,
    donor_keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mix the donor's background into `img` with per-pixel `weights`; boxes come back unchanged.

    Pixels inside `img`'s boxes keep their values exactly, and the donor's own items (its boxes) are
    never brought in, so the labels stay complete and exact. The weight ramps up over `feather` pixels
    away from those boxes, so no rectangular seam marks where the objects are. Linear mode blends intensities,
    ``(1 - w)·x + w·y``; log mode adds the donor's attenuation, ``A = A_x + w·A_y``, i.e. stacks the
    donor's baggage in the beam (transmissions multiply). `donor_keep` (an ``(H, W)`` mask) replaces
    the donor's box mask when the donor is not a plain scan (e.g. a shifted copy of `img` itself).
    """
    if donor_keep is None:
        donor_keep = box_mask(donor.shape[:2], donor_boxes, margin)
    keep = box_mask(img.shape[:2], boxes, margin) | donor_keep
    ramp = np.clip(ndimage.distance_transform_edt(~keep) / max(feather, 1), 0.0, 1.0) if keep.any() else 1.0
    w = (weights * ramp)[..., None].astype(np.float32)
    if log_space:
        out = from_log(to_log(img) + w * to_log(donor))
    else:
        out = np.clip(np.rint((1.0 - w) * img + w * donor.astype(np.float32)), 0, 255).astype(np.uint8)
    return out, boxes.copy()


def mixup(
    img: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    donor: np.ndarray,
    donor_boxes: np.ndarray,
    donor_labels: np.ndarray,
    lam: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classic detection MixUp: blend whole images, keep the boxes of both."""
    out = np.rint(lam * img.astype(np.float32) + (1.0 - lam) * donor).astype(np.uint8)
    return out, np.concatenate([boxes, donor_boxes]), np.concatenate([labels, donor_labels])


def cutmix(
    img: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    donor: np.ndarray,
    donor_boxes: np.ndarray,
    donor_labels: np.ndarray,
    rect: tuple[int, int, int, int],
    min_visible: float = 0.4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classic detection CutMix: paste ``rect = (x0, y0, x1, y1)`` of the donor.

    Own boxes stay if at least `min_visible` of their area is still visible; donor boxes are clipped to
    the rectangle and kept if at least `min_visible` of their area falls inside it.
    """
    x0, y0, x1, y1 = rect
    out = img.copy()
    out[y0:y1, x0:x1] = donor[y0:y1, x0:x1]
    r = np.array([x0, y0, x1, y1], np.float32)
    own_visible = 1.0 - _inter_area(boxes, r) / np.maximum(_area(boxes), 1e-6)
    clipped = np.concatenate(
        [np.maximum(donor_boxes[:, :2], r[:2]), np.minimum(donor_boxes[:, 2:], r[2:])], 1
    )
    donor_inside = _area(clipped) / np.maximum(_area(donor_boxes), 1e-6)
    keep_own, keep_donor = own_visible >= min_visible, donor_inside >= min_visible
    new_boxes = np.concatenate([boxes[keep_own], clipped[keep_donor]]).astype(np.float32)
    return out, new_boxes, np.concatenate([labels[keep_own], donor_labels[keep_donor]])


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _inter_area(boxes: np.ndarray, rect: np.ndarray) -> np.ndarray:
    inter = np.concatenate([np.maximum(boxes[:, :2], rect[:2]), np.minimum(boxes[:, 2:], rect[2:])], 1)
    return _area(inter)


def hflip(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right."""
    w = img.shape[1]
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return img[:, ::-1].copy(), flipped


def zoom(
    img: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    scale: float,
    fill: int = 255,
    min_visible: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale about the centre on a canvas of the same size (pad with air, or crop); boxes follow.

    Boxes cut by the crop are clipped and kept when at least `min_visible` of their area remains.
    """
    from PIL import Image

    h, w = img.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR))
    out = np.full_like(img, fill)
    oy, ox = (h - nh) // 2, (w - nw) // 2  # offset of the resized image on the canvas (may be negative)
    sy, sx = max(0, -oy), max(0, -ox)
    dy, dx = max(0, oy), max(0, ox)
    ch, cw = min(h - dy, nh - sy), min(w - dx, nw - sx)
    out[dy : dy + ch, dx : dx + cw] = resized[sy : sy + ch, sx : sx + cw]
    sx_, sy_ = nw / w, nh / h
    moved = boxes * np.array([sx_, sy_, sx_, sy_], np.float32) + np.array([ox, oy, ox, oy], np.float32)
    clipped = np.clip(moved, 0, [w, h, w, h]).astype(np.float32)
    keep = _area(clipped) >= min_visible * np.maximum(_area(moved), 1e-6)
    return out, clipped[keep], labels[keep]
