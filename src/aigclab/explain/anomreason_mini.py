"""AnomReason-Mini: procedural outdoor scenes with planted semantic anomalies and exact quadruples.

No vision-language model or AnomReason image can be had offline, so the claim "a model trained on
quadruple annotations reasons about semantic anomalies better than untrained baselines" is reproduced on
a world whose ground truth is exact. A scene (128 x 128 px) has a sky with a sun, a ground line and three
elements chosen from six; each element can carry the anomaly of its kind:

========================  ==================  ===================================================
kind                      element             anomaly (severity from its magnitude)
========================  ==================  ===================================================
``shadow_direction``      tree                its shadow falls toward the sun (3; 4 when long)
``floating``              ball                it hangs above the ground, shadow left below (2-4)
``reflection_mismatch``   pond + post         the reflection has the wrong colour (2), is upright
                                              instead of mirrored (3) or is missing (3)
``impossible_count``      clock on a pole     the dial has n != 12 hour marks (2 when off by one,
                                              3 by two or three, 4 beyond)
``scale_inconsistency``   house + person      the person is taller than the house (3; 5 when 1.8x)
``garbled_text``          sign                letters are nonsense and mirrored (2; 3 when most
                                              glyphs are mirrored)
========================  ==================  ===================================================

Everything else (the other objects' shadows, the sun side, colours, sizes, positions, noise) varies
without being an anomaly. A scene has 0 anomalies (clean negatives, ~30%), 1 (~55%) or 2 (~15%).
Scene ``i`` of a split is drawn from seed ``SPLIT_SEEDS[split] + i``; the seed ranges never overlap,
so train and test scenes are distinct. `paraphrase` gives a second wording of each ground truth, used
to check the metric.

Example:
    >>> scene = render_scene(3)
    >>> scene.image.shape
    (128, 128, 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aigclab.explain.quadruples import Quadruple

__all__ = ["KINDS", "SIZE", "SPLIT_SEEDS", "Scene", "make_split", "paraphrase", "render_scene"]

SIZE = 128
KINDS = (
    "shadow_direction",
    "floating",
    "reflection_mismatch",
    "impossible_count",
    "scale_inconsistency",
    "garbled_text",
)
SPLIT_SEEDS = {"train": 0, "val": 5_000_000, "test": 10_000_000}
WORDS = ("CAFE", "SHOP", "PARK", "BANK", "HOTEL", "BAKERY", "TAXI", "OPEN")
COLOURS = {"red": (200, 40, 40), "blue": (40, 70, 200), "yellow": (220, 200, 40), "purple": (130, 50, 160)}

# (name, phenomenon, reasoning) templates per kind: the ground truth's wording and a paraphrase.
_TEXT: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "shadow_direction": (
        (
            "the tree's shadow",
            "the tree casts its shadow toward the sun on the {sun} side",
            "light travels away from its source, so shadows fall on the side opposite the sun",
        ),
        (
            "shadow of the tree",
            "the shade of the tree points at the {sun} sun instead of away from it",
            "an object blocks light coming from the sun, so its shade must lie away from the sun",
        ),
    ),
    "floating": (
        (
            "the {colour} ball",
            "the {colour} ball hangs {h} pixels above the ground with nothing holding it",
            "without support, gravity would pull the ball down onto the ground",
        ),
        (
            "{colour} ball",
            "a {colour} ball floats in mid-air about {h} px over the grass, unsupported",
            "objects fall unless something supports them; its shadow lies far below it",
        ),
    ),
    "reflection_mismatch": (
        (
            "the post's reflection in the pond",
            "the reflection in the pond {how}",
            "a water surface mirrors the object above it upside down with the same colours",
        ),
        (
            "pond reflection",
            "the mirror image of the post in the water {how}",
            "still water reflects what stands on its bank as a flipped copy of matching colour",
        ),
    ),
    "impossible_count": (
        ("the clock", "the clock face has {n} hour marks", "a clock dial has exactly twelve hour marks"),
        (
            "clock dial",
            "the dial of the clock shows {n} hour ticks instead of twelve",
            "clocks divide the day into twelve hours, so twelve marks are expected",
        ),
    ),
    "scale_inconsistency": (
        (
            "the person next to the house",
            "the person is {r:.1f} times as tall as the house beside them",
            "a person is much smaller than a house standing at the same distance",
        ),
        (
            "person beside the house",
            "a human figure towers over the house, {r:.1f}x its height",
            "at equal depth people are far shorter than buildings",
        ),
    ),
    "garbled_text": (
        (
            "the sign's text",
            "the sign reads '{text}', nonsense letters, some of them mirrored",
            "signs carry readable words written with correctly oriented letters",
        ),
        (
            "text on the sign",
            "the lettering on the board is gibberish ('{text}') with reversed glyphs",
            "real signage shows legible words, not scrambled or flipped characters",
        ),
    ),
}
_HOW = {
    "colour": "has a different colour from the post",
    "upright": "is upright instead of mirrored",
    "missing": "is missing",
}
_HOW_PARA = {
    "colour": "is coloured differently than the post itself",
    "upright": "stands the right way up rather than flipped",
    "missing": "does not appear at all",
}


@dataclass
class Scene:
    image: np.ndarray
    anomalies: list[Quadruple]
    meta: dict[str, Any] = field(default_factory=dict)


def _quad(kind: str, box: list[int], severity: int, variant: int = 0, **fmt: Any) -> Quadruple:
    name, phen, reason = (t.format(**fmt) for t in _TEXT[kind][variant])
    return Quadruple(name=name, phenomenon=phen, reasoning=reason, severity=severity, region=box, kind=kind)


class _Painter:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.sun_left = bool(rng.random() < 0.5)
        sky = tuple(int(v) for v in rng.integers([120, 170, 210], [170, 210, 255]))
        ground = tuple(int(v) for v in rng.integers([60, 130, 40], [110, 180, 80]))
        self.horizon = int(rng.integers(58, 70))
        self.ground = ground
        self.im = Image.new("RGB", (SIZE, SIZE), sky)
        self.d = ImageDraw.Draw(self.im)
        self.d.rectangle([0, self.horizon, SIZE, SIZE], fill=ground)
        sx = int(rng.integers(8, 22)) if self.sun_left else int(rng.integers(106, 120))
        self.d.ellipse([sx - 7, 6, sx + 7, 20], fill=(255, 230, 90))
        self.shadow = tuple(int(0.55 * c) for c in ground)

    def cast(self, x0: int, x1: int, y: int, length: int, toward_sun: bool = False) -> None:
        away = 1 if self.sun_left else -1
        d = -away if toward_sun else away
        self.d.polygon(
            [(x0, y), (x1, y), (x1 + d * length, y + 4), (x0 + d * length, y + 4)], fill=self.shadow
        )

    def tree(self, cx: int, base: int, anomalous: bool) -> tuple[list[int], dict[str, Any]]:
        h, r = int(self.rng.integers(12, 20)), int(self.rng.integers(7, 11))
        length = int(self.rng.integers(10, 22))
        self.cast(cx - 2, cx + 2, base, length, toward_sun=anomalous)
        self.d.rectangle([cx - 2, base - h, cx + 2, base], fill=(110, 70, 30))
        green = (int(self.rng.integers(20, 60)), int(self.rng.integers(100, 160)), 40)
        self.d.ellipse([cx - r, base - h - 2 * r + 3, cx + r, base - h + 3], fill=green)
        box = [cx - r - length, base - h - 2 * r, cx + r + length, base + 5]
        return box, {"severity": 4 if length >= 16 else 3, "sun": "left" if self.sun_left else "right"}

    def ball(self, cx: int, base: int, anomalous: bool) -> tuple[list[int], dict[str, Any]]:
        r = int(self.rng.integers(5, 9))
        colour = str(self.rng.choice(list(COLOURS)))
        h = int(self.rng.integers(7, 25)) if anomalous else 0
        self.d.ellipse([cx - r, base - 2, cx + r + 4, base + 3], fill=self.shadow)
        self.d.ellipse([cx - r, base - 2 * r - h, cx + r, base - h], fill=COLOURS[colour])
        sev = 2 if h < 11 else 3 if h < 17 else 4
        return [cx - r - 1, base - 2 * r - h - 1, cx + r + 5, base + 4], {
            "severity": sev,
            "colour": colour,
            "h": h,
        }

    def pond(self, cx: int, base: int, anomalous: bool) -> tuple[list[int], dict[str, Any]]:
        w, top = int(self.rng.integers(14, 19)), base - 8
        self.d.ellipse([cx - w, top, cx + w, base + 8], fill=(60, 110, 190))
        colour = tuple(int(v) for v in self.rng.integers(150, 255, 3))
        ph = int(self.rng.integers(10, 16))
        self.d.rectangle([cx - 2, top - ph, cx + 2, top], fill=colour)
        self.d.ellipse([cx - 4, top - ph - 7, cx + 4, top - ph + 1], fill=colour)
        how = str(self.rng.choice(["colour", "upright", "missing"])) if anomalous else "normal"
        refl = tuple(int(0.5 * c + 0.5 * w_) for c, w_ in zip(colour, (60, 110, 190), strict=True))
        if how == "colour":
            refl = tuple(
                int(0.5 * (255 - c) + 0.5 * w_) for c, w_ in zip(colour, (60, 110, 190), strict=True)
            )
        if how in ("normal", "colour"):  # mirrored: the post hangs down and the knob is at the bottom
            self.d.rectangle([cx - 2, top + 1, cx + 2, top + min(ph, 14)], fill=refl)
            self.d.ellipse([cx - 4, top + min(ph, 14) - 1, cx + 4, top + min(ph, 14) + 7], fill=refl)
        elif how == "upright":
            self.d.ellipse([cx - 4, top + 1, cx + 4, top + 9], fill=refl)
            self.d.rectangle([cx - 2, top + 8, cx + 2, top + 15], fill=refl)
        sev = 2 if how == "colour" else 3
        return [cx - w, top - ph - 8, cx + w, base + 9], {"severity": sev, "how": how}

    def clock(self, cx: int, base: int, anomalous: bool) -> tuple[list[int], dict[str, Any]]:
        cy, r = base - 34, 13
        self.cast(cx - 1, cx + 1, base, 12)
        self.d.rectangle([cx - 1, cy, cx + 1, base], fill=(80, 80, 80))
        self.d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(245, 245, 235), outline=(20, 20, 20))
        n = int(self.rng.choice([8, 9, 10, 11, 13, 14, 15, 16])) if anomalous else 12
        for k in range(n):
            a = 2 * np.pi * k / n
            x, y = cx + 10 * np.sin(a), cy - 10 * np.cos(a)
            self.d.rectangle([round(x) - 1, round(y) - 1, round(x), round(y)], fill=(20, 20, 20))
        for a, ln in ((self.rng.uniform(0, 2 * np.pi), 6), (self.rng.uniform(0, 2 * np.pi), 8)):
            self.d.line([cx, cy, cx + ln * np.sin(a), cy - ln * np.cos(a)], fill=(20, 20, 20), width=1)
        off = abs(n - 12)
        sev = 2 if off == 1 else 3 if off <= 3 else 4
        return [cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1], {"severity": sev, "n": n}

    def house_person(self, cx: int, base: int, anomalous: bool) -> tuple[list[int], dict[str, Any]]:
        hw, hh = int(self.rng.integers(9, 13)), int(self.rng.integers(14, 20))
        hx = cx - 6
        self.cast(hx - hw, hx + hw, base, 8)
        wall = tuple(int(v) for v in self.rng.integers(150, 230, 3))
        self.d.rectangle([hx - hw, base - hh, hx + hw, base], fill=wall)
        self.d.polygon(
            [(hx - hw - 2, base - hh), (hx + hw + 2, base - hh), (hx, base - hh - 10)], fill=(150, 50, 40)
        )
        self.d.rectangle([hx - 2, base - 7, hx + 2, base], fill=(90, 60, 30))
        house_h = hh + 10
        ph = (
            int(self.rng.integers(int(1.25 * house_h), int(2.2 * house_h)))
            if anomalous
            else int(self.rng.integers(8, 13))
        )
        px = hx + hw + 6
        shirt = tuple(int(v) for v in self.rng.integers(30, 220, 3))
        head = max(2, ph // 6)
        self.d.ellipse([px - head, base - ph, px + head, base - ph + 2 * head], fill=(230, 190, 160))
        self.d.rectangle(
            [px - max(1, ph // 10), base - ph + 2 * head, px + max(1, ph // 10), base], fill=shirt
        )
        ratio = ph / house_h
        sev = 5 if ratio >= 1.8 else 3
        box = [px - head - 1, base - ph - 1, px + head + 1, base + 1]
        return box, {"severity": sev, "r": ratio}

    def sign(self, cx: int, base: int, anomalous: bool) -> tuple[list[int], dict[str, Any]]:
        top = base - 26
        self.cast(cx - 14, cx + 14, base, 8)
        for lx in (cx - 10, cx + 10):
            self.d.rectangle([lx - 1, top, lx + 1, base], fill=(90, 60, 30))
        self.d.rectangle([cx - 19, top - 12, cx + 19, top + 4], fill=(240, 235, 220), outline=(60, 40, 20))
        font = ImageFont.load_default(size=10)
        if anomalous:
            letters = "BCDFGHJKLMNPQRSTVWXZ"
            text = "".join(str(self.rng.choice(list(letters))) for _ in range(int(self.rng.integers(4, 6))))
            flips = self.rng.random(len(text)) < self.rng.uniform(0.3, 0.9)
        else:
            text, flips = str(self.rng.choice(WORDS)), np.zeros(0, bool)
        x = cx - 3 * len(text)
        for k, ch in enumerate(text):
            glyph = Image.new("L", (8, 12), 0)
            ImageDraw.Draw(glyph).text((0, 0), ch, fill=255, font=font)
            if anomalous and flips[k]:
                glyph = glyph.transpose(
                    Image.Transpose.FLIP_LEFT_RIGHT if k % 2 else Image.Transpose.FLIP_TOP_BOTTOM
                )
            self.im.paste((20, 20, 20), (x, top - 11), glyph)
            x += 6
        sev = 3 if anomalous and flips.mean() >= 0.5 else 2
        return [cx - 20, top - 13, cx + 20, top + 5], {"severity": sev, "text": text}


_ELEMENTS = {
    "shadow_direction": "tree",
    "floating": "ball",
    "reflection_mismatch": "pond",
    "impossible_count": "clock",
    "scale_inconsistency": "house_person",
    "garbled_text": "sign",
}


def render_scene(seed: int, anomaly_rate: float = 0.7, max_anomalies: int = 2) -> Scene:
    """One scene from `seed`: three elements, each anomalous or not, with its ground-truth quadruples."""
    rng = np.random.default_rng(seed)
    painter = _Painter(rng)
    kinds = [KINDS[i] for i in rng.choice(len(KINDS), 3, replace=False)]
    n_anom = 0
    if rng.random() < anomaly_rate:
        n_anom = 1 if rng.random() < 0.78 or max_anomalies < 2 else 2
    planted = set(rng.choice(3, n_anom, replace=False).tolist())
    anomalies, elements = [], []
    for slot, kind in enumerate(kinds):
        cx = 21 + 43 * slot + int(rng.integers(-4, 5))
        base = int(rng.integers(painter.horizon + 22, SIZE - 12))
        box, info = getattr(painter, _ELEMENTS[kind])(cx, base, slot in planted)
        box = [int(np.clip(v, 0, SIZE)) for v in box]
        elements.append({"kind": kind, "anomalous": slot in planted, "box": box})
        if slot in planted:
            fmt = {k: v for k, v in info.items() if k != "severity"}
            if kind == "reflection_mismatch":
                fmt["how"] = _HOW[info["how"]]
            anomalies.append((_quad(kind, box, info["severity"], 0, **fmt), fmt, info))
    arr = np.asarray(painter.im, np.float64) + rng.normal(0, 3.0, (SIZE, SIZE, 3))
    meta = {"seed": seed, "elements": elements, "paraphrase_args": [(q.kind, f, i) for q, f, i in anomalies]}
    return Scene(arr.clip(0, 255).astype(np.uint8), [q for q, _, _ in anomalies], meta)


def paraphrase(scene: Scene) -> list[Quadruple]:
    """The scene's ground truth in the second wording (same facts, different words)."""
    out = []
    for q, (kind, fmt, info) in zip(scene.anomalies, scene.meta["paraphrase_args"], strict=True):
        fmt = dict(fmt)
        if kind == "reflection_mismatch":
            fmt["how"] = _HOW_PARA[info["how"]]
        out.append(_quad(kind, list(q.region or []), q.severity, 1, **fmt))
    return out


def make_split(split: str, n: int, anomaly_rate: float = 0.7) -> list[Scene]:
    """Scenes ``SPLIT_SEEDS[split] + i`` for i < n."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLIT_SEEDS)}")
    return [render_scene(SPLIT_SEEDS[split] + i, anomaly_rate) for i in range(n)]
