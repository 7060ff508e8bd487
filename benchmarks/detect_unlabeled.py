"""DPGNet on AIGC-Mini: learning from unlabeled images of new generators, against source-only training.

Protocol: the labeled source is the training family (600 `dcgan` train fakes) with 600 real train
patches (from one half of them); the unlabeled target pool is the other half of the real train patches plus every other
generator's train fakes, labels hidden from the method; evaluation on the test sets (real test patches
+ each generator's test fakes), per target generator. Methods share the architecture, the epochs, the
steps per epoch and the seed:

- ``source-only``: every epoch on the labeled source only;
- ``dpgnet-no-pseudo`` / ``dpgnet-no-distill``: the adaptation epochs without pseudo labels / without
  the teacher distillation;
- ``dpgnet``: the full method.

Also recorded: pseudo-label precision and kept share per epoch (measured with the hidden labels), and
source-domain (`dcgan`) accuracy after the labeled phase and at the end (forgetting). Run:

    python benchmarks/detect_unlabeled.py                 # 3 seeds, resumes from the partial file
    python benchmarks/detect_unlabeled.py --seeds 2 --detector dpgnet-cnn-tiny  # adds a backbone
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigclab.data.mini import MiniSplit, fake_set, load_mini, mini_manifest, real_set
from aigclab.detect import create_detector
from aigclab.metrics.detection import binary_metrics
from aigclab.reports import markdown_table, write_json

OUT = Path(__file__).parent / "results"
PARTIAL = OUT / "detect_unlabeled.partial.jsonl"
N_LABELED_PER_CLASS = 600  # labeled source images per class (CPU budget; the pool keeps every image)
METHODS: dict[str, dict[str, Any]] = {
    "source-only": {"unlabeled": False},
    "dpgnet-no-pseudo": {"unlabeled": True, "pseudo_labels": False},
    "dpgnet-no-distill": {"unlabeled": True, "distill": False},
    "dpgnet": {"unlabeled": True},
}


def protocol(seed: int = 0) -> dict[str, Any]:
    """Labeled source, unlabeled target pool (with its hidden labels and generators) and the test set."""
    source = mini_manifest()["train_generator"]
    real, _ = real_set("train")
    perm = np.random.default_rng(seed).permutation(len(real))
    half = len(real) // 2
    fakes = fake_set(source, "train")
    pick = np.random.default_rng(seed + 1).permutation(len(fakes))[:N_LABELED_PER_CLASS]
    labeled = MiniSplit.concat([real.subset(perm[:N_LABELED_PER_CLASS]), fakes.subset(pick)])
    targets = sorted(g for g in mini_manifest()["generators"] if g != source)
    pool = MiniSplit.concat([real.subset(perm[half:])] + [fake_set(g, "train") for g in targets])
    test = load_mini("test")
    source_test = test.subset(np.flatnonzero(np.isin(test.generators, ["real", source])))
    return {"source": source, "targets": targets, "labeled": labeled, "pool": pool, "test": test,
            "source_test": source_test}  # fmt: skip


def evaluate(det: Any, test: MiniSplit, gens: list[str]) -> dict[str, dict[str, float]]:
    scores = det.score(test.images)
    out = {}
    for g in gens:
        keep = (test.generators == "real") | (test.generators == g)
        m = binary_metrics(scores[keep], test.labels[keep])
        out[g] = {k: m[k] for k in ("auc", "acc", "real_acc", "fake_acc")}
    return out


def run_one(method: str, seed: int, data: dict[str, Any], detector: str = "dpgnet-tiny") -> dict[str, Any]:
    spec = dict(METHODS[method])
    uses_unlabeled = spec.pop("unlabeled")
    det = create_detector(detector, seed=seed, **spec)
    curve: list[dict[str, Any]] = []

    def on_epoch(epoch: int, d: Any) -> None:
        if epoch == 0:  # after the labeled phase: the source accuracy "before" adaptation
            ev = evaluate(d, data["source_test"], [data["source"]])[data["source"]]
            curve.append({"epoch": epoch, "source_acc": ev["acc"], "source_auc": ev["auc"]})

    t0 = time.perf_counter()
    lab, pool = data["labeled"], data["pool"]
    hist = det.adapt(lab.images, lab.labels, pool.images if uses_unlabeled else None, on_epoch=on_epoch)
    seconds = time.perf_counter() - t0
    final = evaluate(det, data["test"], [data["source"], *data["targets"]])
    pseudo = []
    for rec in hist["epochs"]:
        if "pseudo_index" not in rec:
            continue
        idx, lab_ = np.asarray(rec["pseudo_index"], int), np.asarray(rec["pseudo_label"], int)
        truth = pool.labels[idx]
        pseudo.append(
            {
                "epoch": rec["epoch"],
                "kept_share": rec["kept_share"],
                "n_kept": len(idx),
                "precision": float((truth == lab_).mean()) if len(idx) else None,
                "kept_fake_share": float(lab_.mean()) if len(idx) else None,
                "precision_fake": float((truth[lab_ == 1] == 1).mean()) if (lab_ == 1).any() else None,
                "precision_real": float((truth[lab_ == 0] == 0).mean()) if (lab_ == 0).any() else None,
                "threshold": rec.get("threshold"),
            }
        )
    return {
        "detector": detector,
        "method": method,
        "seed": seed,
        "per_target": {g: final[g] for g in data["targets"]},
        "mean_auc": float(np.mean([final[g]["auc"] for g in data["targets"]])),
        "mean_acc": float(np.mean([final[g]["acc"] for g in data["targets"]])),
        "source_acc_before": curve[0]["source_acc"],
        "source_acc_after": final[data["source"]]["acc"],
        "source_auc_after": final[data["source"]]["auc"],
        "curve": curve,
        "pseudo_labels": pseudo,
        "losses": [rec["loss"] for rec in hist["epochs"]],
        "train_seconds": seconds,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def _det(run: dict[str, Any]) -> str:
    return str(run["detector"])


def summarise(runs: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for name in METHODS:
        rs = [r for r in runs if r["method"] == name]
        if not rs:
            continue
        entry: dict[str, Any] = {}
        for key in ("mean_auc", "mean_acc", "source_acc_before", "source_acc_after"):
            entry[key], entry[f"{key}_std"] = _mean_std([r[key] for r in rs])
        entry["per_target"] = {
            g: {m: float(np.mean([r["per_target"][g][m] for r in rs])) for m in ("auc", "acc")}
            for g in data["targets"]
        }
        if rs[0]["pseudo_labels"]:
            epochs = [p["epoch"] for p in rs[0]["pseudo_labels"]]
            entry["pseudo_labels_per_epoch"] = [
                {
                    "epoch": e,
                    **{
                        k: float(np.mean([v for r in rs for p in r["pseudo_labels"] if p["epoch"] == e
                                          and (v := p[k]) is not None] or [np.nan]))
                        for k in ("kept_share", "precision", "kept_fake_share")
                    },
                }
                for e in epochs
            ]  # fmt: skip
        entry["seeds"] = [r["seed"] for r in rs]
        entry["train_seconds_mean"] = float(np.mean([r["train_seconds"] for r in rs]))
        methods[name] = entry
    base = methods.get("source-only")
    if base:
        for entry in methods.values():
            entry["delta_auc_points"] = 100 * (entry["mean_auc"] - base["mean_auc"])
            entry["delta_acc_points"] = 100 * (entry["mean_acc"] - base["mean_acc"])
    return methods


def write_markdown(result: dict[str, Any], path: Path) -> None:
    targets = result["protocol"]["targets"]
    lines = [
        "# DPGNet on AIGC-Mini: unlabeled images of new generators",
        "",
        f"Labeled source: `{result['protocol']['source']}` train fakes + real train patches from one half "
        f"(n={result['protocol']['n_labeled']}); unlabeled pool: the other real half + the train fakes of "
        f"{', '.join(targets)} (n={result['protocol']['n_unlabeled']}, labels hidden); test: real test "
        f"patches + each target's test fakes. Mean ± std over seeds; accuracy at threshold 0.5. "
        f"Δ = points against source-only (the paper claims +6.3). `methods` in the JSON = "
        f"`{result['protocol']['detector']}`.",
        "",
    ]
    for det, methods in result["by_detector"].items():
        lines += [f"## {det} (seeds {result['seeds_by_detector'][det]})", "", *_tables(methods, targets)]
    lines += [f"Setup: {result['setup']}", ""]
    path.write_text("\n".join(lines))


def _tables(methods: dict[str, Any], targets: list[str]) -> list[str]:
    rows = [
        {
            "method": m,
            "mean_auc": f"{e['mean_auc']:.3f} ± {e['mean_auc_std']:.3f}",
            "mean_acc": f"{e['mean_acc']:.3f} ± {e['mean_acc_std']:.3f}",
            "Δauc (pts)": f"{e['delta_auc_points']:+.1f}",
            "Δacc (pts)": f"{e['delta_acc_points']:+.1f}",
            "src acc before": e["source_acc_before"],
            "src acc after": e["source_acc_after"],
        }
        for m, e in methods.items()
    ]
    cols = ["method", "mean_auc", "mean_acc", "Δauc (pts)", "Δacc (pts)", "src acc before", "src acc after"]
    per = [
        {
            "method": m,
            **{g: f"{e['per_target'][g]['auc']:.3f} / {e['per_target'][g]['acc']:.3f}" for g in targets},
        }
        for m, e in methods.items()
    ]
    pseudo = [{"method": m, **p} for m, e in methods.items() for p in e.get("pseudo_labels_per_epoch", [])]
    return [
        markdown_table(rows, cols),
        "",
        "### Per target: AUC / accuracy (mean over seeds)",
        "",
        markdown_table(per, ["method", *targets]),
        "",
        "### Pseudo labels per epoch (hidden labels used only to measure)",
        "",
        markdown_table(pseudo, ["method", "epoch", "kept_share", "precision", "kept_fake_share"]),
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fresh", action="store_true", help="ignore the partial results of an earlier run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--detector", default="dpgnet-tiny", help="DPGNet preset to run")
    ap.add_argument("--primary", default="dpgnet-tiny", help="preset whose results fill `methods`")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    data = protocol()
    done: list[dict[str, Any]] = []
    if PARTIAL.is_file() and not args.fresh:
        done = [json.loads(line) for line in PARTIAL.read_text().splitlines() if line.strip()]
    elif PARTIAL.is_file():
        PARTIAL.unlink()
    if args.primary not in {_det(r) for r in done} | {args.detector}:
        ap.error(f"no runs of --primary {args.primary}")
    start = time.perf_counter()
    for seed in seeds:
        for method in METHODS:
            if any(r["method"] == method and r["seed"] == seed and _det(r) == args.detector for r in done):
                continue
            run = run_one(method, seed, data, args.detector)
            print(f"{method} seed {seed}: mean AUC {run['mean_auc']:.3f} acc {run['mean_acc']:.3f} "
                  f"({run['train_seconds']:.0f}s)", flush=True)  # fmt: skip
            done.append(run)
            with PARTIAL.open("a") as fh:
                fh.write(json.dumps(run) + "\n")
    detectors = sorted({_det(r) for r in done})
    complete = {  # seeds with every method run, per detector (an interrupted seed is left out)
        (_det(r), r["seed"])
        for r in done
        if all(
            any(_det(q) == _det(r) and q["seed"] == r["seed"] and q["method"] == m for q in done)
            for m in METHODS
        )
    }
    by_det = {d: [r for r in done if _det(r) == d and (d, r["seed"]) in complete] for d in detectors}
    seeds_by = {d: sorted({r["seed"] for r in rs}) for d, rs in by_det.items()}
    result = {
        "protocol": {
            "source": data["source"],
            "targets": data["targets"],
            "n_labeled": len(data["labeled"]),
            "n_unlabeled": len(data["pool"]),
            "unlabeled_fake_share": float(data["pool"].labels.mean()),
            "n_test_real": int((data["test"].labels == 0).sum()),
            "detector": args.primary,
        },
        "methods": summarise(by_det[args.primary], data),
        "by_detector": {d: summarise(rs, data) for d, rs in by_det.items()},
        "seeds_by_detector": seeds_by,
        "runs": done,
        "setup": (
            f"CPU, {args.threads} thread(s), machine shared with other jobs "
            f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores); "
            f"training wall time summed over runs {sum(r['train_seconds'] for r in done):.0f}s (this "
            f"invocation {time.perf_counter() - start:.0f}s; earlier runs resumed from the partial file)"
        ),
    }
    write_json(OUT / "detect_unlabeled.json", result)
    write_markdown(result, OUT / "detect_unlabeled.md")
    print(f"wrote {OUT / 'detect_unlabeled.json'} and .md")


if __name__ == "__main__":
    main()
