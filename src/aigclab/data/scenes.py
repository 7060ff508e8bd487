"""Procedural scenes with ground-truth local attributes, and a parser that reads them back from any image.

A scene is a small square image (default 32x32) on a plain grey background with 1-3 objects, each alone in
one of the four quadrants ("regions", 0 = top-left, 1 = top-right, 2 = bottom-left, 3 = bottom-right). Each
object has a colour (hue uniform on the circle, high saturation and value), a shape (``disk``, ``square``,
``triangle``), a size (half-extent in pixels) and a position (its centre jittered around the quadrant's
centre). Objects are rendered with 4x4 supersampling (anti-aliased edges) and never leave their quadrant.
Everything is drawn from a `numpy.random.Generator` seeded by the caller, so a seed gives the same scenes.

`parse_region` reads the object inside a region (a mask) back from any image, generated or edited, with no
knowledge of how it was made: the background colour is the median of the pixels outside the mask; the
object's colour is the mean of the region's core pixels (those differing from the background by at least
3/4 of the strongest difference); each pixel's coverage is its difference from the background over the
core's (clipped to [0, 1], below 1/4 set to 0). From the coverage come the area, the centroid and the fill
ratio of the soft bounding box (area / (covered columns x covered rows); shape: disk ~0.79, square ~1,
triangle ~0.59), which does not depend on where the object sits on the pixel grid.

Example:
    >>> from aigclab.data.scenes import make_scenes, parse_region, region_mask
    >>> scenes = make_scenes(4, seed=0)
    >>> scenes.images.shape, scenes.images.dtype
    ((4, 32, 32, 3), dtype('uint8'))
    >>> obj = scenes.objects[0][0]
    >>> parsed = parse_region(scenes.images[0], region_mask(32, obj.region))
    >>> bool(parsed.present), classify_shape(parsed.fill) == obj.shape
    (True, True)
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from aigclab.errors import AigclabError

__all__ = [
    "ATTRIBUTES",
    "GROUPS",
    "PROFILE",
    "SHAPES",
    "Parsed",
    "SceneObject",
    "Scenes",
    "Spread",
    "attribute_change",
    "attribute_spread",
    "change_profile",
    "classify_shape",
    "make_scenes",
    "parse_region",
    "parse_regions",
    "region_mask",
    "render",
    "scene_statistics",
]

SHAPES = ("disk", "square", "triangle")
# fill ratio of each shape as rendered at 32x32 and parsed (medians over 2000 scenes); a triangle's is a bit
# above 1/2 because its apex rows are only partly covered
FILL = {"disk": 0.79, "square": 1.0, "triangle": 0.59}
ATTRIBUTES = ("red", "green", "blue", "hue", "area", "fill", "row", "col")
SUPERSAMPLE = 4
SIZE_RANGE = (3.0, 5.5)  # half-extent in pixels (at 32x32; scaled with the image size)
JITTER = 2.0  # centre offset from the quadrant centre, pixels (scaled)
BACKGROUND = (0.25, 0.45)  # grey level range
MIN_CONTRAST = 0.15  # strongest pixel difference from the background below which a region is empty


@dataclass(frozen=True)
class SceneObject:
    """One object: its quadrant, shape, colour (RGB in [0, 1]), hue in [0, 1), size and centre (pixels)."""

    region: int
    shape: str
    colour: tuple[float, float, float]
    hue: float
    size: float
    row: float
    col: float


@dataclass
class Scenes:
    """Images (N, H, W, 3) uint8, the objects of each image, and its background grey level."""

    images: np.ndarray
    objects: list[list[SceneObject]]
    background: np.ndarray


def _inside(shape: str, y: np.ndarray, x: np.ndarray, obj: SceneObject) -> np.ndarray:
    dy, dx, s = y - obj.row, x - obj.col, obj.size
    if shape == "disk":
        return dy**2 + dx**2 <= s**2
    if shape == "square":
        return (np.abs(dy) <= s) & (np.abs(dx) <= s)
    # triangle: apex at the top centre, base along the bottom edge of the 2s x 2s box
    return (dy <= s) & (np.abs(dx) <= (dy + s) / 2)


def render(objects: list[SceneObject], background: float, size: int = 32) -> np.ndarray:
    """One scene (H, W, 3) float in [0, 1]: anti-aliased objects over a flat grey background."""
    sub = (np.arange(size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    y, x = np.meshgrid(sub, sub, indexing="ij")
    image = np.full((size, size, 3), background)
    for obj in objects:
        if obj.shape not in SHAPES:
            raise AigclabError(f"unknown shape {obj.shape!r}; known: {', '.join(SHAPES)}")
        hit = _inside(obj.shape, y, x, obj).astype(float)
        alpha = hit.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))[..., None]
        image = image * (1 - alpha) + np.asarray(obj.colour) * alpha
    return image


def _random_object(region: int, size: int, rng: np.random.Generator) -> SceneObject:
    scale = size / 32
    half = size // 2
    top, left = (region // 2) * half, (region % 2) * half
    hue = float(rng.uniform(0, 1))
    colour = colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0))
    return SceneObject(
        region=region,
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=(float(colour[0]), float(colour[1]), float(colour[2])),
        hue=hue,
        size=float(rng.uniform(*SIZE_RANGE)) * scale,
        row=top + half / 2 + float(rng.uniform(-JITTER, JITTER)) * scale,
        col=left + half / 2 + float(rng.uniform(-JITTER, JITTER)) * scale,
    )


def make_scenes(n: int, seed: int, size: int = 32) -> Scenes:
    """``n`` scenes from ``seed``: 1-3 objects each, in distinct random quadrants."""
    if size < 16 or size % 2:
        raise AigclabError(f"scene size must be even and >= 16, got {size}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    objects: list[list[SceneObject]] = []
    background = rng.uniform(*BACKGROUND, size=n)
    for i in range(n):
        regions = sorted(rng.choice(4, size=int(rng.integers(1, 4)), replace=False).tolist())
        objs = [_random_object(r, size, rng) for r in regions]
        images[i] = np.round(render(objs, float(background[i]), size) * 255).astype(np.uint8)
        objects.append(objs)
    return Scenes(images, objects, background)


def region_mask(size: int, region: int) -> np.ndarray:
    """(size, size) bool mask of quadrant ``region`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    if region not in range(4):
        raise AigclabError(f"region must be 0-3, got {region}")
    mask = np.zeros((size, size), bool)
    half = size // 2
    mask[(region // 2) * half : (region // 2 + 1) * half, (region % 2) * half : (region % 2 + 1) * half] = (
        True
    )
    return mask


@dataclass(frozen=True)
class Parsed:
    """What `parse_region` reads inside a mask: whether an object is there, its mean colour (RGB in [0, 1]),
    hue in [0, 1), area (pixels), fill ratio of its bounding box and centroid (row, col in pixels). The
    values are NaN when ``present`` is false."""

    present: bool
    colour: tuple[float, float, float]
    hue: float
    area: float
    fill: float
    row: float
    col: float

    def vector(self) -> np.ndarray:
        """The attributes as one float vector, in the order of `ATTRIBUTES`."""
        return np.array([*self.colour, self.hue, self.area, self.fill, self.row, self.col])


_ABSENT = Parsed(False, (np.nan, np.nan, np.nan), np.nan, np.nan, np.nan, np.nan, np.nan)


def parse_region(image: np.ndarray, mask: np.ndarray) -> Parsed:
    """Read the object inside ``mask`` (H, W) bool from ``image`` (H, W, 3) uint8 or float in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3 or mask.shape != image.shape[:2]:
        raise AigclabError(f"need image (H, W, 3) and mask (H, W), got {image.shape} and {mask.shape}")
    if not mask.any() or mask.all():
        raise AigclabError("the mask must cover some pixels and leave some out")
    x = image.astype(float) / 255 if image.dtype == np.uint8 else image.astype(float)
    background = np.median(x[~mask], axis=0)
    dist = np.linalg.norm(x - background, axis=2) * mask
    strongest = float(np.quantile(dist[mask], 0.95))
    if strongest < MIN_CONTRAST:
        return _ABSENT
    core = dist > 0.75 * strongest
    alpha = np.clip(dist / np.median(dist[core]), 0, 1)  # coverage: the object's share of each pixel
    alpha[alpha < 0.25] = 0
    colour = x[core].mean(0)
    hue = colorsys.rgb_to_hsv(*np.clip(colour, 0, 1))[0]
    area = alpha.sum()
    box = alpha.max(0).sum() * alpha.max(1).sum()  # soft bounding box: covered columns x covered rows
    rows, cols = np.indices(alpha.shape) + 0.5
    return Parsed(
        True,
        (float(colour[0]), float(colour[1]), float(colour[2])),
        float(hue),
        float(area),
        float(area / box),
        float((alpha * rows).sum() / area),
        float((alpha * cols).sum() / area),
    )


def parse_regions(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`parse_region` over images (N, H, W, 3): (N, len(ATTRIBUTES)) floats, a row of NaN where absent."""
    return np.stack([parse_region(im, mask).vector() for im in images])


def classify_shape(fill: float) -> str:
    """The shape whose ideal fill ratio is nearest to ``fill``."""
    return min(SHAPES, key=lambda s: abs(FILL[s] - fill))


def scene_statistics(images: np.ndarray) -> dict[str, float]:
    """How scene-like a set of images (N, H, W, 3) is, read by the parser alone (no ground truth needed).

    Per quadrant the parser finds an object or not; a found object is ``clean`` when it looks like one that
    `make_scenes` draws: fill ratio within the rendered shapes' range, area within the sizes' range (with a
    margin) and a saturated colour. Compare the numbers of generated images with those of `make_scenes`.
    """
    size = images.shape[1]
    scale = (size / 32) ** 2
    area_lo, area_hi = 0.5 * 2 * SIZE_RANGE[0] ** 2 * scale, 1.3 * 4 * SIZE_RANGE[1] ** 2 * scale
    parsed = [parse_region(im, region_mask(size, r)) for im in images for r in range(4)]
    found = [p for p in parsed if p.present]
    clean = [
        p
        for p in found
        if 0.45 <= p.fill <= 1.0
        and area_lo <= p.area <= area_hi
        and colorsys.rgb_to_hsv(*np.clip(p.colour, 0, 1))[1] >= 0.4
    ]
    shapes = [classify_shape(p.fill) for p in clean]
    return {
        "objects_per_image": len(found) / len(images),
        "clean_share": len(clean) / max(len(found), 1),
        **{f"share_{s}": shapes.count(s) / max(len(shapes), 1) for s in SHAPES},
        "area_mean": float(np.mean([p.area for p in clean])) if clean else float("nan"),
        "area_std": float(np.std([p.area for p in clean])) if clean else float("nan"),
        "fill_median": float(np.median([p.fill for p in clean])) if clean else float("nan"),
        "hue_spread": float(np.std([p.hue for p in clean])) if clean else float("nan"),
    }


# attribute groups: which `ATTRIBUTES` columns make up colour, size, shape and position
GROUPS = {"colour": (0, 1, 2), "size": (4,), "shape": (5,), "position": (6, 7)}
PROFILE = (0, 1, 2, 4, 5, 6, 7)  # the columns of a signed change profile (hue is circular: left out)


@dataclass(frozen=True)
class Spread:
    """How much each attribute varies across objects of the data set: per `GROUPS` entry (the root of the
    summed variances of its columns) and per `PROFILE` column (standard deviations)."""

    group: dict[str, float]
    column: np.ndarray


def attribute_spread(n: int = 2000, seed: int = 0, size: int = 32) -> Spread:
    """The spread of the parsed attributes of the objects of ``make_scenes(n, seed)``.

    Positions are taken relative to their quadrant's centre, so the position spread is the jitter of an
    object within its region, not the distance between regions.
    """
    scenes = make_scenes(n, seed, size)
    rows = []
    for image, objs in zip(scenes.images, scenes.objects, strict=True):
        for o in objs:
            v = parse_region(image, region_mask(size, o.region)).vector()
            v[6] -= (o.region // 2 + 0.5) * size / 2
            v[7] -= (o.region % 2 + 0.5) * size / 2
            rows.append(v)
    var = np.var(np.stack(rows), axis=0)
    group = {g: float(np.sqrt(var[list(cols)].sum())) for g, cols in GROUPS.items()}
    return Spread(group, np.sqrt(var[list(PROFILE)]))


def attribute_change(before: np.ndarray, after: np.ndarray, spread: Spread) -> np.ndarray:
    """Per row of parsed attributes (N, len(ATTRIBUTES)): the size of the change of each `GROUPS` entry
    (Euclidean over its columns) in units of its data-set spread, (N, len(GROUPS)); NaN where either is absent.
    """
    diff = after - before
    cols = [np.linalg.norm(diff[:, list(c)], axis=1) / spread.group[g] for g, c in GROUPS.items()]
    return np.stack(cols, axis=1)


def change_profile(before: np.ndarray, after: np.ndarray, spread: Spread) -> np.ndarray:
    """Signed change of each `PROFILE` column in units of its data-set spread, (N, len(PROFILE))."""
    return (after - before)[:, list(PROFILE)] / spread.column
