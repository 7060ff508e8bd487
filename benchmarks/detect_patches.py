"""How many patches the default detector should read per image, and whether its verdicts hold at each count.

A full-size image is scored as the mean P(fake) of up to `max_patches` 32-px patches. This benchmark
measures, on the test splits only (the calibration uses train splits):

- ranking and verdicts on test "mosaics" of K patches (K = 1 ... 64): a real is K patches of one held-out
  test photo, a fake K test images of one zoo family (independent images: a fake's mean spreads less than
  that of one large generated image would, so the fake side is optimistic). Verdicts under the default's
  per-count bands (`Detector.count_bands`) and under its one-patch band alone, which is how every image
  was decided before the per-count calibration;
- the same two decisions on full-size real photos nobody generated (held-out test photos and the demo
  reals, as shipped and re-compressed / resized: `aigclab.detect.trust.real_photo_fpr`);
- the feature cost per image at each K (one thread), to set against `detect_scale`'s measured throughput.

Writes benchmarks/results/detect_patches.json and .md. Run: ``python benchmarks/detect_patches.py``
(about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from aigclab.data.mini import fake_set, mini_generators, real_set
from aigclab.detect.base import feature_memory
from aigclab.detect.default import default_detector
from aigclab.detect.trust import real_photo_fpr
from aigclab.reports import markdown_table, write_json

OUT = Path(__file__).parent / "results"
DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
COUNTS = (1, 2, 4, 8, 16, 32, 64)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="mosaic draws (the detector itself is deterministic)")
    p.add_argument("--per-photo", type=int, default=100, help="real mosaics per test photo and seed")
    p.add_argument("--per-family", type=int, default=200, help="fake mosaics per family and seed")
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the saved .json")
    return p.parse_args()


def mosaic_means(probs: np.ndarray, k: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `count` draws of k of `probs` (without repeats where there are enough)."""
    return np.array(
        [probs[rng.choice(len(probs), size=k, replace=len(probs) < k)].mean() for _ in range(count)]
    )


def rates(scores: np.ndarray, ends: tuple[float, float]) -> dict[str, float]:
    lo, hi = ends
    return {"fake": float((scores >= hi).mean()), "uncertain": float(((scores >= lo) & (scores < hi)).mean())}


def mosaic_table(det, args: argparse.Namespace) -> list[dict]:  # type: ignore[no-untyped-def]
    reals, photos = real_set("test")
    per_photo = {n: det.score(reals.images[photos == n]) for n in sorted(set(photos.tolist()))}
    per_family = {g: det.score(fake_set(g, "test").images) for g in mini_generators()}
    one_patch = det.decision(1)[1:]
    rows = []
    for k in COUNTS:
        t, lo, hi = det.decision(k)
        per_seed: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            rng = np.random.default_rng([seed, k])
            r = np.concatenate([mosaic_means(p, k, args.per_photo, rng) for p in per_photo.values()])
            fakes = {g: mosaic_means(p, k, args.per_family, rng) for g, p in per_family.items()}
            f = np.concatenate(list(fakes.values()))
            aucs, aps = [], []
            for fs in fakes.values():
                y = np.r_[np.zeros(len(r)), np.ones(len(fs))]
                aucs.append(roc_auc_score(y, np.r_[r, fs]))
                aps.append(average_precision_score(y, np.r_[r, fs]))
            vals = {
                "auc": np.mean(aucs),
                "ap": np.mean(aps),
                "min_auc": min(aucs),
                "balanced_acc": ((r < t).mean() + (f >= t).mean()) / 2,
            }
            for name, ends in (("count_band", (lo, hi)), ("one_patch_band", one_patch)):
                rr, fr = rates(r, ends), rates(f, ends)
                vals |= {
                    f"{name}_real_called_fake": rr["fake"],
                    f"{name}_real_uncertain": rr["uncertain"],
                    f"{name}_fake_called_fake": fr["fake"],
                    f"{name}_fake_uncertain": fr["uncertain"],
                }
            for key, v in vals.items():
                per_seed.setdefault(key, []).append(float(v))
        row: dict = {"patches": k, "threshold": t, "band": [lo, hi]}
        for key, v in per_seed.items():
            row[key], row[f"{key}_std"] = float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        rows.append(row)
        print(json.dumps({"patches": k, "auc": row["auc"], "bal": row["balanced_acc"]}), flush=True)
    return rows


def real_photos(det) -> dict:  # type: ignore[no-untyped-def]
    demo = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in sorted(DEMO.glob("real_*.png"))}
    with_counts = real_photo_fpr(det, extra=demo)
    bands = det.count_bands
    det.count_bands = None  # every image decided by the one-patch band, as before the per-count calibration
    try:
        one_band = real_photo_fpr(det, extra=demo)
    finally:
        det.count_bands = bands
    keys = ("real_photo_fpr", "uncertain_rate", "n", "rows")
    return {
        "count_bands": {k: with_counts[k] for k in keys},
        "one_patch_band": {k: one_band[k] for k in keys},
    }


def feature_cost(det, reps: int = 10) -> list[dict]:  # type: ignore[no-untyped-def]
    """CPU ms per image of the feature and search at K patches (one thread, batches as the stream uses)."""
    torch.set_num_threads(1)
    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    rows = []
    with feature_memory(False):  # each call computes its features, as the stream does
        for k in COUNTS:
            det.score(x[:k])  # warm-up
            start = time.process_time()
            for _ in range(reps):
                det.score(x[:k])
            rows.append({"patches": k, "feature_and_search_ms": 1000 * (time.process_time() - start) / reps})
    return rows


def main() -> None:
    args = parse_args()
    if args.markdown_only:
        return write_markdown(json.loads((OUT / "detect_patches.json").read_text()))
    det = default_detector()
    scale = OUT / "detect_scale.json"
    measured = json.loads(scale.read_text())["runs"] if scale.is_file() else []
    throughput = [
        {
            "patches": r.get("max_patches", 64),
            "img_per_s": r["img_per_s"],
            "floor": r["decode_floor_img_per_s"],
        }
        for r in measured
        if r.get("megapixels") == 3 and r.get("engine") == "local" and r.get("images") == 1000
    ]
    result = {
        "setup": (
            "default detector (ftnet-tiny, AIGC-Mini prior bank, calibrated held-out on train splits at 1, 2, "
            f"4 ... 64 patches); test mosaics: {args.per_photo} per test photo (8 photos) and {args.per_family} "
            f"per zoo family (7) per seed, {args.seeds} seeds; AUC/AP per family against all real mosaics, "
            "then the mean over families"
        ),
        "config": vars(args),
        "count_bands": {str(n): list(v) for n, v in sorted(det.count_bands.items())},
        "mosaics": mosaic_table(det, args),
        "real_photos": real_photos(det),
        "feature_cost": feature_cost(det),
        "throughput_3mp_from_detect_scale": throughput,
    }
    write_json(OUT / "detect_patches.json", result)
    write_markdown(result)
    print(f"wrote {OUT / 'detect_patches.json'}")


def write_markdown(res: dict) -> None:
    m = {r["patches"]: r for r in res["mosaics"]}
    rp = res["real_photos"]
    first = m[1]
    lines = [
        "# Default detector: patches per image, and verdicts calibrated per patch count\n",
        "## Headline\n",
        f"- Ranking on test mosaics rises with the patches read: mean AUC {m[1]['auc']:.3f} at 1, "
        f"{m[8]['auc']:.3f} at 8, {m[16]['auc']:.3f} at 16, {m[64]['auc']:.3f} at 64 "
        f"(worst family {m[64]['min_auc']:.3f} at 64).",
        f"- The one-patch band ({m[1]['band'][0]:.3f}-{m[1]['band'][1]:.3f}) applied to 64-patch means (how every "
        "image was decided before the per-count bands) called "
        f"{m[64]['one_patch_band_fake_called_fake']:.1%} of fake mosaics fake and "
        f"{m[64]['one_patch_band_fake_uncertain']:.1%} uncertain; the band calibrated at 64 patches calls "
        f"{m[64]['count_band_fake_called_fake']:.1%} fake, at the price of "
        f"{m[64]['count_band_real_called_fake']:.1%} of real mosaics called fake (was "
        f"{m[64]['one_patch_band_real_called_fake']:.1%}).",
        f"- Full-size real photos ({rp['count_bands']['n']} images): called fake "
        f"{rp['count_bands']['real_photo_fpr']:.3f} with the per-count bands vs "
        f"{rp['one_patch_band']['real_photo_fpr']:.3f} with the one-patch band; uncertain "
        f"{rp['count_bands']['uncertain_rate']:.3f} vs {rp['one_patch_band']['uncertain_rate']:.3f}.",
        f"- One patch alone: AUC {first['auc']:.3f}, balanced accuracy {first['balanced_acc']:.3f}.\n",
        "## Setup\n",
        res["setup"] + "; mean ± std over seeds of the mosaic draw.\n",
        "## Test mosaics\n",
    ]
    rows = [
        {
            "patches": r["patches"],
            "auc": f"{r['auc']:.3f} ± {r['auc_std']:.3f}",
            "ap": f"{r['ap']:.3f} ± {r['ap_std']:.3f}",
            "worst-family auc": f"{r['min_auc']:.3f}",
            "balanced acc @ threshold": f"{r['balanced_acc']:.3f}",
            "band": f"{r['band'][0]:.3f}-{r['band'][1]:.3f}",
            "real→fake / uncertain": f"{r['count_band_real_called_fake']:.3f} / {r['count_band_real_uncertain']:.3f}",
            "fake→fake / uncertain": f"{r['count_band_fake_called_fake']:.3f} / {r['count_band_fake_uncertain']:.3f}",
            "one-patch band: real→fake, fake→fake": f"{r['one_patch_band_real_called_fake']:.3f}, "
            f"{r['one_patch_band_fake_called_fake']:.3f}",
        }
        for r in res["mosaics"]
    ]
    lines.append(markdown_table(rows, list(rows[0])))
    lines.append("\n## Real photos, full size (per variant, per-count bands)\n")
    lines.append(markdown_table(rp["count_bands"]["rows"], list(rp["count_bands"]["rows"][0])))
    lines.append(
        "\n## Cost\n\nCPU time of the feature and the search per image, one thread, measured beside other jobs "
        "(training runs on both cores), so only the growth with K is meaningful; the throughput columns are "
        "`detect_scale`'s quiet-machine runs at 3 MP.\n"
    )
    cost = {r["patches"]: r["feature_and_search_ms"] for r in res["feature_cost"]}
    tp = {r["patches"]: r for r in res["throughput_3mp_from_detect_scale"]}
    cost_rows = [
        {
            "patches": k,
            "feature + search ms/image (1 thread)": f"{v:.1f}",
            "3 MP img/s (detect_scale)": f"{tp[k]['img_per_s']:.1f}" if k in tp else "-",
            "of decode floor": f"{tp[k]['img_per_s'] / tp[k]['floor']:.2f}" if k in tp else "-",
        }
        for k, v in cost.items()
    ]
    lines.append(markdown_table(cost_rows, list(cost_rows[0])))
    (OUT / "detect_patches.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
