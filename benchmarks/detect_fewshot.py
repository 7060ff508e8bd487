"""Detection benchmark on AIGC-Mini: FTNet 1/4/8-shot and FTNet-T against zero-shot baselines, plus speed.

Writes benchmarks/results/detect_fewshot.json and detect_fewshot.md (and the per-method cross-generator
reports with ROC / accuracy plots under benchmarks/results/detect/). Run:

    python benchmarks/detect_fewshot.py            # everything
    python benchmarks/detect_fewshot.py --skip-speed
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aigclab.detect import bench
from aigclab.reports import markdown_table, write_json

OUT = Path(__file__).parent / "results"


def extraction_speed(threads: int = 2) -> list[dict]:
    """Images/s of the embedded backbones at 32 and 224 pixels (the layers FTNet reads)."""
    from aigclab.nn import create_backbone

    torch.set_num_threads(threads)
    rows = []
    for name, layer in (("aigclab-tiny", "block3"), ("residual-spectrum", "spectrum")):
        model = create_backbone(name)
        for size, batch, reps in ((32, 256, 8), (224, 32, 3)):
            x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
            model.features(x, layer=layer)  # warm-up
            t0 = time.perf_counter()
            for _ in range(reps):
                model.features(x, layer=layer)
            rate = batch * reps / (time.perf_counter() - t0)
            rows.append(
                {
                    "backbone": name,
                    "input": f"{size}px",
                    "batch": batch,
                    "threads": threads,
                    "images_per_s": rate,
                }
            )
    return rows


def query_latency(sizes=(1_000, 100_000, 1_000_000), dim: int = 64, n_queries: int = 256) -> list[dict]:
    """ms per query of a kernel-sum lookup against banks of `sizes` clustered keys: brute force vs faiss."""
    from aigclab.detect.ftnet import SupportBank

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, dim))  # class-pure clusters, as real feature banks are clustered
    rows = []
    for n in sizes:
        which = rng.integers(0, len(centres), n)
        keys = (centres[which] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
        labels = which % 2
        queries = (
            centres[rng.integers(0, len(centres), n_queries)] + 0.3 * rng.normal(size=(n_queries, dim))
        ).astype(np.float32)
        exact_lk = None
        for kind in ("exact", "flat", "hnsw", "ivf"):
            b = SupportBank(kind, neighbours=32)
            b.add(keys, labels)
            t0 = time.perf_counter()
            if kind != "exact":
                b._faiss(0), b._faiss(1)  # build the indexes outside the timed query
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            lk = b.log_kernel(queries, 15.0)
            ms = 1000 * (time.perf_counter() - t0) / n_queries
            if kind == "exact":
                exact_lk = lk
            agree = float(((lk[:, 1] > lk[:, 0]) == (exact_lk[:, 1] > exact_lk[:, 0])).mean())
            rows.append(
                {
                    "bank": n,
                    "index": kind,
                    "ms_per_query": ms,
                    "build_s": build_s,
                    "decision_agreement_with_exact": agree,
                }
            )
            print(
                f"bank {n:>8} {kind:>5}: {ms:.3f} ms/query, build {build_s:.1f}s, agreement {agree:.3f}",
                flush=True,
            )
        exact_ms = next(r["ms_per_query"] for r in rows if r["bank"] == n and r["index"] == "exact")
        for r in rows:
            if r["bank"] == n:
                r["speedup_vs_exact"] = exact_ms / r["ms_per_query"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    cache = tempfile.mkdtemp(prefix="aigclab-features-")
    t0 = time.perf_counter()
    trained = bench.train_baselines(bench.BASELINES, cache)  # once, for both protocols
    cross = bench.cross_generator(OUT / "detect", cache_dir=cache, trained=trained)
    methods = bench.few_shot(OUT / "detect", seeds=list(range(args.seeds)), cache_dir=cache, trained=trained)
    few_s = time.perf_counter() - t0
    speed = {} if args.skip_speed else {"extraction": extraction_speed(), "query": query_latency()}
    baselines = {m: r for m, r in methods.items() if not m.startswith("ftnet")}
    best_base = max(baselines, key=lambda m: baselines[m]["mean_acc"])
    gains = {
        m: r["mean_acc"] - baselines[best_base]["mean_acc"]
        for m, r in methods.items()
        if m.startswith("ftnet")
    }
    result = {
        "methods": methods,
        "best_baseline": best_base,
        "gain_over_best_baseline": gains,
        "cross_generator": {
            m: {"mean": r["mean"], "per_generator": r["per_generator"]} for m, r in cross.items()
        },
        "speed": speed,
        "seconds": few_s,
    }
    write_json(OUT / "detect_fewshot.json", result)
    gens = list(next(iter(methods.values()))["per_generator"])
    rows = [
        {
            "method": m,
            **{g: f"{r['per_generator'][g]['acc']:.3f}±{r['per_generator'][g]['acc_std']:.3f}" for g in gens},
            "mean acc": r["mean_acc"],
            "mean AP": r["mean_ap"],
        }
        for m, r in methods.items()
    ]
    md = [
        "# Few-shot detection on AIGC-Mini (unseen generators; accuracy mean±std over seeds)",
        "",
        markdown_table(rows, ["method", *gens, "mean acc", "mean AP"]),
        "",
        f"Best zero-shot baseline: {best_base}. Gain in mean accuracy over it: "
        + ", ".join(f"{m} {g:+.3f}" for m, g in gains.items()),
        "",
    ]
    if speed:
        md += [
            "## Feature extraction",
            "",
            markdown_table(speed["extraction"], ["backbone", "input", "batch", "threads", "images_per_s"]),
            "",
            "## Query latency against support banks",
            "",
            markdown_table(
                speed["query"],
                [
                    "bank",
                    "index",
                    "ms_per_query",
                    "speedup_vs_exact",
                    "build_s",
                    "decision_agreement_with_exact",
                ],
            ),
            "",
        ]
    (OUT / "detect_fewshot.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
