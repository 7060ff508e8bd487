"""How much real-vs-fake signal each forensic cue carries on AIGC-Mini, and how long an explanation takes.

The cue reference (real quantiles) comes from the *train* split (`aigclab explain build-reference`); all
AUCs are measured on the *test* split, per generator (sampled real test patches vs that generator's test
fakes). Three numbers per cue and generator:
- ``auc`` (the headline, ``mean_auc``): AUC of the two-sided strength that users are shown (how far the
  value is from typical real photos), so 0.5 means the evidence shown carries no signal;
- ``raw_auc``: AUC of the raw cue value (above 0.5: fakes score higher, below: lower);
- ``separability``: max(raw_auc, 1 - raw_auc), what a per-generator threshold could reach.
Writes benchmarks/results/explain_cues.json and explain_cues.md. Run: python benchmarks/explain_cues.py
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
    from aigclab.explain.reference import strength

    ref = load_reference()
    test = load_mini("test")
    rng = np.random.default_rng(seed)
    n_real = min(per_generator, int((test.labels == 0).sum()))
    real = cue_scores(test.images[rng.choice(np.flatnonzero(test.labels == 0), n_real, replace=False)])
    out: dict = {name: {"per_generator": {}, "train_auc": ref["cues"][name]["train_auc"]} for name in real}
    for gen in sorted(set(test.generators.tolist()) - {"real"}):
        idx = np.flatnonzero(test.generators == gen)
        fake = cue_scores(test.images[rng.choice(idx, min(per_generator, len(idx)), replace=False)])
        for name in real:
            values = np.r_[real[name], fake[name]]
            y = np.r_[np.zeros(len(real[name])), np.ones(len(fake[name]))]
            raw = float(roc_auc_score(y, values))
            shown = float(roc_auc_score(y, [strength(name, v, ref) for v in values]))
            out[name]["per_generator"][gen] = {
                "auc": shown,
                "raw_auc": raw,
                "separability": max(raw, 1 - raw),
            }
    for r in out.values():
        for key in ("auc", "raw_auc", "separability"):
            r[f"mean_{key}"] = float(np.mean([g[key] for g in r["per_generator"].values()]))
    return out


def latency(n: int = 20) -> dict:
    from aigclab.detect.default import default_detector

    det = default_detector()
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
            **{
                g: f"{r['per_generator'][g]['auc']:.3f} ({r['per_generator'][g]['raw_auc']:.2f})"
                for g in gens
            },
            "mean_auc": r["mean_auc"],
            "mean_separability": r["mean_separability"],
        }
        for n, r in cues.items()
    ]
    md = [
        "# Forensic cues on AIGC-Mini: test-split AUC of the strength shown to users (raw-value AUC in brackets)",
        "",
        markdown_table(rows, ["cue", *gens, "mean_auc", "mean_separability"]),
        "",
        f"Explanation latency (cues backend, detector + cues + attribution map): {lat['32px']:.1f} ms for a "
        f"32 px patch, {lat['256px']:.1f} ms for a 256 px image.",
        "",
    ]
    (OUT / "explain_cues.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
