"""How much real-vs-fake signal each forensic cue carries on AIGC-Mini, and how long an explanation takes.

The cue reference (direction and real quantiles) comes from the *train* split (`aigclab explain
build-reference`); AUCs here are measured on the *test* split, per generator (all real test patches vs
that generator's test fakes), in the reference's direction, so 0.5 means no signal. Writes
benchmarks/results/explain_cues.json and explain_cues.md. Run: python benchmarks/explain_cues.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from aigclab.data.mini import load_mini
from aigclab.explain import create_explainer, explain_image
from aigclab.explain.reference import build_reference, cue_scores, load_reference
from aigclab.reports import markdown_table, write_json

OUT = Path(__file__).parent / "results"


def cue_aucs(per_generator: int, seed: int = 0) -> dict:
    ref = load_reference()
    test = load_mini("test")
    rng = np.random.default_rng(seed)
    real_idx = rng.choice(
        np.flatnonzero(test.labels == 0), min(per_generator, int((test.labels == 0).sum())), replace=False
    )
    real = cue_scores(test.images[real_idx])
    out: dict = {
        name: {
            "per_generator": {},
            "direction": ref["cues"][name]["direction"],
            "train_auc": ref["cues"][name]["train_auc"],
        }
        for name in real
    }
    for gen in sorted(set(test.generators.tolist()) - {"real"}):
        idx = np.flatnonzero(test.generators == gen)
        fake = cue_scores(test.images[rng.choice(idx, min(per_generator, len(idx)), replace=False)])
        for name in real:
            d = ref["cues"][name]["direction"]
            y = np.r_[np.zeros(len(real[name])), np.ones(len(fake[name]))]
            out[name]["per_generator"][gen] = float(roc_auc_score(y, d * np.r_[real[name], fake[name]]))
    for r in out.values():
        r["mean_auc"] = float(np.mean(list(r["per_generator"].values())))
    return out


def latency(n: int = 20) -> dict:
    from aigclab.detect.cli import build_default_detector

    det = build_default_detector()
    explainer = create_explainer("cues")
    test = load_mini("test")
    rng = np.random.default_rng(1)
    patches = test.images[rng.choice(len(test), n, replace=False)]
    big = (
        np.asarray(load_mini("test").images[:64])
        .reshape(8, 8, 32, 32, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(256, 256, 3)
    )
    res = {}
    for name, imgs in (("32px", list(patches)), ("256px", [big] * 3)):
        explain_image(imgs[0], det, explainer)  # warm-up
        t0 = time.perf_counter()
        for img in imgs:
            explain_image(img, det, explainer)
        res[name] = 1000 * (time.perf_counter() - t0) / len(imgs)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-generator", type=int, default=600)
    ap.add_argument(
        "--rebuild-reference", action="store_true", help="rebuild the shipped cue reference first"
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.rebuild_reference:
        build_reference()
    cues = cue_aucs(args.per_generator)
    lat = latency()
    write_json(
        OUT / "explain_cues.json",
        {
            "cues": cues,
            "latency_ms": lat["32px"],
            "latency_ms_by_size": lat,
            "per_generator_n": args.per_generator,
            "backend": "cues",
        },
    )
    gens = list(next(iter(cues.values()))["per_generator"])
    rows = [
        {
            "cue": n,
            "direction": f"{r['direction']:+d}",
            **{g: r["per_generator"][g] for g in gens},
            "mean_auc": r["mean_auc"],
        }
        for n, r in cues.items()
    ]
    md = [
        "# Forensic cues on AIGC-Mini (test split AUC, direction fixed on the train split)",
        "",
        markdown_table(rows, ["cue", "direction", *gens, "mean_auc"]),
        "",
        f"Explanation latency (cues backend, detector + cues + attribution map): {lat['32px']:.1f} ms for a "
        f"32 px patch, {lat['256px']:.1f} ms for a 256 px image.",
        "",
    ]
    (OUT / "explain_cues.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
