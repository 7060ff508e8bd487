"""The embedded default detector, its calibrated threshold, and resolving a detector by name or file.

The default is FTNet (`DEFAULT_DETECTOR`) with a *prior* bank of AIGC-Mini training images: `per_generator`
train fakes of every zoo family and as many real train patches. A user's ``--support`` images join as the
``user`` group and are weighed against that bank (`aigclab.detect.ftnet.SupportBank`).

Calibration (`calibrate_held_out`): leave one family out. Fold *g* builds the bank without family *g*'s
fakes and without the reals of one group of training photos, then scores other train images of family *g*
and patches of those held-out photos. The pooled held-out scores pick the threshold (best balanced accuracy)
and the two ends of the "uncertain" band, chosen apart (`choose_band`: the band holding the fewest held-out
images outside which their balanced accuracy reaches `target_accuracy`, at most `max_uncertain` of them
inside; else the best balanced accuracy under that cap). Only train splits are used, so
the test splits of the benchmark stay unseen.

A full-size image is scored as the mean over up to 64 patches, which spreads far less than one patch's
score: a band chosen on single patches calls most multi-patch fakes "uncertain". So the calibration is
repeated at each count in `patch_counts` (1, 2, 4, ..., 64) on held-out "mosaics": a real is n patches
of one held-out photo, a fake n held-out images of the left-out family (independent images, so a fake's
mean spreads less than that of one large generated image would; the fake end is on the narrow side).

Example:
    >>> from aigclab.detect.default import resolve_detector
    >>> det = resolve_detector("default")  # doctest: +SKIP
    >>> det.verdicts(det.score(images))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigclab.detect.base import Detector, create_detector, load_detector
from aigclab.detect.ftnet import FTNet, SupportBank

__all__ = [
    "DEFAULT_DETECTOR",
    "Calibration",
    "calibrate_held_out",
    "choose_band",
    "choose_threshold",
    "default_bank",
    "default_detector",
    "patch_counts",
    "resolve_detector",
]

DEFAULT_DETECTOR = "ftnet-tiny"


@dataclass(frozen=True)
class Calibration:
    threshold: float
    band: tuple[float, float]  # (real below, fake at or above)
    balanced_acc: float  # held-out balanced accuracy at `threshold`
    decided_acc: float  # held-out accuracy outside the uncertain band
    uncertain_rate: float  # share of held-out images inside the band
    n: int
    count: int = 1  # patches per held-out image


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold with the best balanced accuracy on (scores, labels): midpoint between two scores."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    if not ((y == 0).any() and (y == 1).any()):
        return 0.5
    order = np.argsort(s)
    s, y = s[order], y[order]
    # threshold below position i: everything from i up is called fake
    tpr = np.r_[np.cumsum(y[::-1])[::-1], 0] / max(1, (y == 1).sum())
    tnr = np.r_[0, np.cumsum(1 - y)] / max(1, (y == 0).sum())
    bal = (tpr + tnr) / 2
    best = np.flatnonzero(bal >= bal.max() - 1e-12)
    i = int(best[len(best) // 2])
    if i == 0:
        return float(s[0] - 1e-6)
    if i == len(s):
        return float(s[-1] + 1e-6)
    return float((s[i - 1] + s[i]) / 2)


def choose_band(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    target_accuracy: float = 0.9,
    max_uncertain: float = 0.5,
) -> tuple[float, float]:
    """(real_below, fake_from) around `threshold`, its two ends chosen apart on (scores, labels).

    Images below the first are called real, at or above the second fake, between them uncertain. The
    band is the one holding the fewest images whose decided images reach `target_accuracy` balanced
    accuracy, with at most `max_uncertain` of the images inside; when no band under that cap reaches the
    target, the band under the cap with the best balanced accuracy on the decided images. Both ends lie
    between observed scores, so each side is answered on scores the calibration saw.
    """
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    if not ((y == 0).any() and (y == 1).any()):
        return (threshold, threshold)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n = len(s)
    fakes_before = np.r_[0, np.cumsum(y)]  # fakes among the i lowest scores
    n_fake, n_real = int(y.sum()), int(n - y.sum())
    t_idx = int(np.searchsorted(s, threshold, side="left"))  # images below the threshold
    i = np.arange(t_idx + 1)[:, None]  # the i lowest are called real
    j = np.arange(t_idx, n + 1)[None, :]  # from position j up they are called fake
    real_right = i - fakes_before[i]
    real_wrong = n_real - (j - fakes_before[j])  # reals at or above j
    fake_right = n_fake - fakes_before[j]
    fake_wrong = fakes_before[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        bal = 0.5 * (real_right / (real_right + real_wrong) + fake_right / (fake_right + fake_wrong))
    bal = np.nan_to_num(bal, nan=0.0)
    width = (j - i) / n
    allowed = width <= max_uncertain + 1e-12
    hit = allowed & (bal >= target_accuracy - 1e-12)
    if hit.any():
        cand = np.where(hit, width, np.inf)
        best = np.flatnonzero(cand == cand.min())
        flat = best[np.argmax(bal.reshape(-1)[best])]
    else:
        cand = np.where(allowed, bal, -np.inf)
        best = np.flatnonzero(cand == cand.max())
        flat = best[np.argmin(width.reshape(-1)[best])]
    bi, bj = np.unravel_index(flat, bal.shape)
    lo_i, hi_j = int(bi), int(bj) + t_idx

    def cut(k: int) -> float:  # a value between scores k-1 and k
        if k <= 0:
            return float(s[0] - 1e-6)
        if k >= n:
            return float(s[-1] + 1e-6)
        return float((s[k - 1] + s[k]) / 2)

    lo = min(cut(lo_i), threshold) if lo_i < t_idx else threshold
    hi = max(cut(hi_j), threshold) if hi_j > t_idx else threshold
    return (lo, hi)


def default_bank(per_generator: int = 64):  # type: ignore[no-untyped-def]
    """The prior bank (a `MiniSplit`) and the photo of each real in it (None for fakes)."""
    from aigclab.data.mini import fake_set, mini_generators, real_set

    rng = np.random.default_rng(0)
    reals, photos = real_set("train")
    parts, photo_of = [], []
    gens = mini_generators()
    idx = rng.choice(len(reals), size=min(len(reals), per_generator * len(gens)), replace=False)
    parts.append(reals.subset(np.sort(idx)))
    photo_of += photos[np.sort(idx)].tolist()
    for g in gens:
        fakes = fake_set(g, "train")
        parts.append(
            fakes.subset(np.sort(rng.choice(len(fakes), size=min(per_generator, len(fakes)), replace=False)))
        )
        photo_of += [""] * len(parts[-1])
    from aigclab.data.mini import MiniSplit

    return MiniSplit.concat(parts), np.array(photo_of)


def patch_counts(max_patches: int) -> list[int]:
    """The patch counts the default calibrates at: 1, 2, 4, ... below `max_patches`, and `max_patches`."""
    out = [1 << k for k in range(max_patches.bit_length()) if 1 << k < max_patches]
    return [*out, max_patches]


def calibrate_held_out(
    det: FTNet,
    per_generator: int = 64,
    queries_per_fold: int = 128,
    counts: Sequence[int] = (1,),
    mosaics_per_fold: int = 64,
    target_accuracy: float = 0.9,
    max_uncertain: float = 0.5,
) -> dict[int, Calibration]:
    """Leave-one-family-out calibration of `det`'s threshold and uncertain band at each patch count in
    `counts` (see module docstring): per fold, `queries_per_fold` held-out patches of each class; at
    count n > 1, `mosaics_per_fold` images of each class made of n of them (a real: n patches of one
    held-out photo; a fake: n images of the held-out family), scored as the mean of their patch scores."""
    from aigclab.data.mini import fake_set, mini_generators, real_set

    bank, bank_photos = default_bank(per_generator)
    bank_feats = det.extractor(bank.images)
    reals, photos = real_set("train")
    gens = mini_generators()
    photo_names = sorted(set(photos.tolist()))
    rng = np.random.default_rng(1)
    scores: dict[int, list[np.ndarray]] = {n: [] for n in counts}
    labels: dict[int, list[np.ndarray]] = {n: [] for n in counts}
    cfg = det.config
    for fold, g in enumerate(gens):
        held_photos = set(photo_names[fold :: len(gens)])
        keep = (bank.generators != g) & ~np.isin(bank_photos, list(held_photos))
        sb = SupportBank(cfg.index, cfg.neighbours, cfg.center, cfg.user_weight)
        sb.add(bank_feats[keep], bank.labels[keep], "prior")
        fakes = fake_set(g, "train")
        in_bank = set(bank.ids[bank.generators == g].tolist())
        pool = [i for i, sid in enumerate(fakes.ids) if sid not in in_bank]
        fq = fakes.images[rng.choice(pool, size=min(queries_per_fold, len(pool)), replace=False)]
        rpool = np.flatnonzero(np.isin(photos, list(held_photos)))
        ridx = rng.choice(rpool, size=min(queries_per_fold, len(rpool)), replace=False)
        lk = sb.log_kernel(det.extractor(np.concatenate([reals.images[ridx], fq])), cfg.beta)
        p = 1.0 / (1.0 + np.exp(np.clip(lk[:, 0] - lk[:, 1], -700, 700)))
        pr, pf = p[: len(ridx)], p[len(ridx) :]
        for n in counts:
            if n == 1:
                r, f = pr, pf
            else:
                r, f = (
                    _mosaics(pr, photos[ridx], n, mosaics_per_fold, rng),
                    _mosaics(pf, None, n, mosaics_per_fold, rng),
                )
            scores[n].append(np.r_[r, f])
            labels[n].append(np.r_[np.zeros(len(r)), np.ones(len(f))])
    out = {}
    for n in counts:
        s, y = np.concatenate(scores[n]), np.concatenate(labels[n]).astype(int)
        t = choose_threshold(s, y)
        lo, hi = choose_band(s, y, t, target_accuracy, max_uncertain)
        pred = s >= t
        bal = ((pred[y == 1]).mean() + (~pred[y == 0]).mean()) / 2
        inside = (s >= lo) & (s < hi)
        decided = float(((s[~inside] >= hi) == (y[~inside] == 1)).mean()) if (~inside).any() else float("nan")
        out[n] = Calibration(t, (lo, hi), float(bal), decided, float(inside.mean()), len(s), n)
    return out


def _mosaics(
    probs: np.ndarray, groups: np.ndarray | None, n: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Mean score of `count` images of n patches each; with `groups`, an image's patches share a group
    (one photo), picked in proportion to its patches. Patches repeat only where a group has fewer than n."""
    out = np.empty(count)
    for m in range(count):
        members = (
            np.arange(len(probs))
            if groups is None
            else np.flatnonzero(groups == groups[rng.integers(len(probs))])
        )
        out[m] = probs[rng.choice(members, size=n, replace=len(members) < n)].mean()
    return out


def default_detector(
    per_generator: int = 64,
    cache_dir: str | None = None,
    device: str = "cpu",
    engine: str = "local",
    calibrate: bool = True,
) -> FTNet:
    """FTNet on the default feature with the AIGC-Mini prior bank; its threshold and band calibrated
    held-out at every count in `patch_counts` (`Detector.count_bands`), `threshold`/`band` at one patch."""
    det: FTNet = create_detector(DEFAULT_DETECTOR, cache_dir=cache_dir, device=device, engine=engine)  # type: ignore[assignment]
    bank, _ = default_bank(per_generator)
    det.add_prior(bank.images, bank.labels)
    if calibrate:
        cals = calibrate_held_out(det, per_generator, counts=patch_counts(det.max_patches))
        det.threshold, det.band = cals[1].threshold, cals[1].band
        det.count_bands = {n: (c.threshold, *c.band) for n, c in cals.items()}
    return det


def resolve_detector(
    spec: str, cache_dir: str | None = None, device: str = "cpu", engine: str = "local"
) -> Detector:
    """``"default"`` (see `default_detector`) or the path of a saved detector ``.safetensors``."""
    if spec == "default":
        return default_detector(cache_dir=cache_dir, device=device, engine=engine)
    return load_detector(Path(spec))
