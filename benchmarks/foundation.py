"""Foundation benchmark: image decoding and degradation throughput, metric agreement with scikit-learn.

Writes benchmarks/results/foundation.json and foundation.md. Run: python benchmarks/foundation.py
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata
from sklearn.metrics import average_precision_score, roc_auc_score

from aigclab.degradations import parse_degradation
from aigclab.io import load_image
from aigclab.metrics import binary_metrics
from aigclab.reports import markdown_table, write_json

OUT = Path(__file__).parent / "results"


def _rate(fn, n: int) -> float:
    fn()  # warm up
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def decode_rates() -> list[dict]:
    photo = skdata.astronaut()  # 512x512 RGB, shipped inside scikit-image
    rows = []
    for fmt, kw in [("PNG", {}), ("JPEG", {"quality": 90}), ("WEBP", {"quality": 90})]:
        buf = io.BytesIO()
        Image.fromarray(photo).save(buf, format=fmt, **kw)
        blob = buf.getvalue()
        rows.append({"op": f"load_image {fmt} 512px", "per_s": _rate(lambda b=blob: load_image(b), 30)})
    return rows


def degradation_rates() -> list[dict]:
    patch = skdata.astronaut()[:256, :256]
    rng = np.random.default_rng(0)
    specs = [
        "jpeg:quality=75",
        "jpeg:quality=30-100",
        "resize:scale=0.5,restore=1",
        "blur:sigma=1",
        "noise:sigma=5",
        "osn-facebook",
        "osn-wechat",
    ]
    return [
        {"op": f"{s} 256px", "per_s": _rate(lambda d=parse_degradation(s): d(patch, rng), 50)} for s in specs
    ]


def metric_agreement(n: int = 100_000) -> dict:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1)
    t0 = time.perf_counter()
    m = binary_metrics(scores, labels)
    ours_s = time.perf_counter() - t0
    return {
        "n": n,
        "seconds": ours_s,
        "ap_abs_diff_vs_sklearn": abs(m["ap"] - average_precision_score(labels, scores)),
        "auc_abs_diff_vs_sklearn": abs(m["auc"] - roc_auc_score(labels, scores)),
    }


def main() -> None:
    rows = decode_rates() + degradation_rates()
    metrics = metric_agreement()
    write_json(OUT / "foundation.json", {"throughput": rows, "metrics": metrics})
    md = [
        "# Foundation benchmark",
        "",
        markdown_table(rows, ["op", "per_s"]),
        "",
        f"Metrics on {metrics['n']} scores: {metrics['seconds']:.3f} s; |AP - sklearn| = "
        f"{metrics['ap_abs_diff_vs_sklearn']:.2e}, |AUC - sklearn| = {metrics['auc_abs_diff_vs_sklearn']:.2e}",
        "",
    ]
    (OUT / "foundation.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
