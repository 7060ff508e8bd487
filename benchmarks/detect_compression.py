"""Compression robustness on AIGC-Mini: PLADA, its ablations and the baselines under JPEG and OSN sharing.

Every method is trained on the same views of AIGC-Mini's training family (real train patches + the
training generator's train fakes): the raw images plus compressed twins of a paired share (20 %, or 100 %
for the ``plada-paired100`` ablation), drawn by `aigclab.detect.plada.paired_views` with the run's seed.
All train for the same number of epochs. Tests use the test splits: every unseen generator (the
cross-generator protocol) and the seen training family (reported per generator, not in the means), under
raw, JPEG q95/75/50/30 and each social-network profile of `aigclab.degradations`.

Writes benchmarks/results/detect_compression.json and .md. Trained models and per-(method, seed) metrics
are cached under .cache/detect_compression/, so an interrupted run resumes and seeds can run in parallel:

    python benchmarks/detect_compression.py --seeds 0 &  python benchmarks/detect_compression.py --seeds 1 &
    python benchmarks/detect_compression.py --seeds 0 1 2          # runs what is missing, writes results
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigclab.data.mini import COMPRESSIONS, MiniSplit, compress, load_mini, mini_protocols
from aigclab.detect import create_detector, load_detector
from aigclab.detect.base import Detector
from aigclab.detect.plada import PLADA, paired_views
from aigclab.metrics import binary_metrics
from aigclab.reports import markdown_table, write_json

OUT = Path(__file__).parent / "results"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "detect_compression"
CONDITIONS = ("raw", *COMPRESSIONS)
METRICS = ("acc", "ap", "auc", "eer")
# method -> (registry name, config overrides); baselines see PLADA's views through `paired_views`
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "plada": ("plada-tiny", {}),
    "plada-no-b2e": ("plada-tiny", {"b2e": False}),
    "plada-no-oda": ("plada-tiny", {"oda": False}),
    "plada-paired100": ("plada-tiny", {"paired_ratio": 1.0}),
    "univfd": ("univfd-tiny", {}),
    "cnndet": ("cnndet-tiny", {"jpeg_prob": 0.0}),  # JPEG exposure = the shared twins, as for PLADA
    "npr": ("npr-tiny", {}),
}


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def balanced(split: MiniSplit, per_class: int, per_generator: int | None = None, seed: int = 0) -> MiniSplit:
    """A fixed subset: `per_class` reals and, per generator, `per_generator` (or `per_class`) fakes."""
    rng = np.random.default_rng(seed)
    pick = []
    for gen in sorted(set(split.generators.tolist())):
        idx = np.flatnonzero(split.generators == gen)
        n = per_class if gen == "real" or per_generator is None else per_generator
        pick.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
    return split.subset(np.sort(np.concatenate(pick)))


def train(method: str, train_set: MiniSplit, seed: int, epochs: int) -> tuple[Detector, float]:
    name, overrides = METHODS[method]
    path = CACHE / f"{method}-s{seed}.safetensors"
    if path.is_file():
        return load_detector(path), float(json.loads(path.with_suffix(".time").read_text()))
    start = time.perf_counter()
    if name.startswith("plada"):
        det = create_detector(name, seed=seed, epochs=epochs, **overrides)
        det.train_on(train_set, seed=seed, log=log)  # type: ignore[attr-defined]
    else:
        plada_cfg = create_detector("plada-tiny").config  # type: ignore[attr-defined]
        paired, twins = paired_views(train_set.images, plada_cfg.paired_ratio, plada_cfg.compressions, seed)
        images = np.concatenate([train_set.images, twins])
        labels = np.concatenate([train_set.labels, train_set.labels[paired]])
        kw = {"seed": seed, "epochs": epochs} if name != "univfd-tiny" else {}
        det = create_detector(name, **kw, **overrides).fit(images, labels)
    seconds = time.perf_counter() - start
    det.save(path)  # type: ignore[attr-defined]
    path.with_suffix(".time").write_text(f"{seconds:.1f}")
    log(f"trained {method} seed {seed} in {seconds:.0f}s")
    return det, seconds


def evaluate(scores: np.ndarray, test: MiniSplit, unseen: list[str]) -> dict[str, Any]:
    """Per-generator metrics (reals vs that generator's fakes), their mean over every test generator
    (the headline keys) and over the unseen ones only."""
    per_gen = {}
    for gen in sorted(set(test.generators.tolist()) - {"real"}):
        mask = (test.generators == "real") | (test.generators == gen)
        m = binary_metrics(scores[mask], test.labels[mask])
        per_gen[gen] = {k: float(m[k]) for k in METRICS}
    mean = {k: float(np.mean([v[k] for v in per_gen.values()])) for k in METRICS}
    return mean | {
        "unseen": {k: float(np.mean([per_gen[g][k] for g in unseen])) for k in METRICS},
        "per_generator": per_gen,
    }


def run_seed(seed: int, methods: list[str], args: argparse.Namespace) -> None:
    todo = [m for m in methods if not (CACHE / f"{m}-s{seed}.json").is_file()]
    if not todo:
        return
    prot = mini_protocols()["cross_generator"]
    train_set = balanced(load_mini("train", generators=prot["train"]), args.n_train)
    test = balanced(load_mini("test"), args.n_test_real, args.n_test_fake)
    log(f"seed {seed}: train {len(train_set)} ({int(train_set.labels.sum())} fake), test {len(test)}; {todo}")
    trained = {m: train(m, train_set, seed, args.epochs) for m in todo}
    results: dict[str, dict[str, Any]] = {m: {"train_seconds": t} for m, (_, t) in trained.items()}
    for cond in CONDITIONS:
        images = test.images if cond == "raw" else compress(test.images, cond)
        tokens = None
        for m, (det, _) in trained.items():
            if isinstance(det, PLADA):  # every PLADA variant reads the same backbone tokens
                tokens = det.tokens(images) if tokens is None else tokens
                scores = det.score_tokens(tokens)
            else:
                scores = det.score(images)
            results[m][cond] = evaluate(scores, test, prot["test"])
        log(f"seed {seed} {cond}: " + ", ".join(f"{m} auc {r[cond]['auc']:.3f}" for m, r in results.items()))
    for m, r in results.items():
        (CACHE / f"{m}-s{seed}.json").write_text(json.dumps(r))


# token sources compared on validation: PLADA config overrides
TOKEN_SOURCES: dict[str, dict[str, Any]] = {
    "aigclab-tiny/block2": {"layer": "block2"},
    "aigclab-tiny/block3": {"layer": "block3"},
    "mobilenetv2-nsfwjs/block5@96px": {
        "backbone": "mobilenetv2-nsfwjs",
        "backbone_kwargs": {"input_size": 96},
        "layer": "block5",
    },
}


def validate_layers(args: argparse.Namespace) -> dict[str, Any]:
    """Choose PLADA's token source on held-out TRAIN-split images (never the test split).

    The training family's train split is cut into a fit part (`n_train` per class) and a disjoint
    validation part (400 per class); each source's PLADA is scored there raw and under JPEG 75/50/30.
    """
    path = CACHE / "validation.json"
    out: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if set(out) >= set(TOKEN_SOURCES):
        return out
    split = load_mini("train", generators=mini_protocols()["cross_generator"]["train"])
    rng = np.random.default_rng(123)
    fit_idx, val_idx = [], []
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(split.labels == label))
        assert len(idx) >= args.n_train + 400, "fit and validation parts would overlap"
        fit_idx.append(idx[: args.n_train])
        val_idx.append(idx[-400:])
    fit, val = split.subset(np.concatenate(fit_idx)), split.subset(np.concatenate(val_idx))
    conditions = ("raw", "jpeg75", "jpeg50", "jpeg30")
    views = {c: val.images if c == "raw" else compress(val.images, c) for c in conditions}
    for source, overrides in TOKEN_SOURCES.items():
        if source in out:
            continue
        det = create_detector("plada-tiny", epochs=args.epochs, **overrides)
        det.train_on(fit, seed=0, log=log)  # type: ignore[attr-defined]
        out[source] = {
            c: {k: float(binary_metrics(det.score(x), val.labels)[k]) for k in METRICS}
            for c, x in views.items()
        }
        log(
            f"validation {source}: "
            + ", ".join(f"{c} auc {v['auc']:.3f} acc {v['acc']:.3f}" for c, v in out[source].items())
        )
        path.write_text(json.dumps(out))
    return out


def summarise(methods: list[str], seeds: list[int], args: argparse.Namespace) -> dict[str, Any]:
    runs = {m: [json.loads((CACHE / f"{m}-s{s}.json").read_text()) for s in seeds] for m in methods}
    out: dict[str, Any] = {"methods": {}, "robustness": {}}
    for m, rs in runs.items():
        out["methods"][m] = {}
        for cond in CONDITIONS:
            entry: dict[str, Any] = {}
            for k in METRICS:
                values = [r[cond][k] for r in rs]
                entry[k], entry[f"{k}_std"] = float(np.mean(values)), float(np.std(values))
            entry["unseen"] = {k: float(np.mean([r[cond]["unseen"][k] for r in rs])) for k in METRICS}
            gens = rs[0][cond]["per_generator"]
            entry["per_generator"] = {
                g: {k: float(np.mean([r[cond]["per_generator"][g][k] for r in rs])) for k in METRICS}
                for g in gens
            }
            out["methods"][m][cond] = entry
        compressed = [c for c in CONDITIONS if c != "raw"]
        rob: dict[str, Any] = {"train_seconds_mean": float(np.mean([r["train_seconds"] for r in rs]))}
        for k in ("acc", "auc"):
            per_seed_drop = [r["raw"][k] - np.mean([r[c][k] for c in compressed]) for r in rs]
            rob[f"{k}_compressed_mean"] = float(np.mean([np.mean([r[c][k] for c in compressed]) for r in rs]))
            rob[f"{k}_drop"], rob[f"{k}_drop_std"] = (
                float(np.mean(per_seed_drop)),
                float(np.std(per_seed_drop)),
            )
            rob[f"{k}_drop_jpeg30"] = float(np.mean([r["raw"][k] - r["jpeg30"][k] for r in rs]))
        out["robustness"][m] = rob
    prot = mini_protocols()["cross_generator"]
    out["setup"] = {
        "train": f"AIGC-Mini train split, {prot['train']} fakes + reals, {args.n_train} of each (fixed subset)",
        "paired": "20% of training images get a compressed twin (100% for plada-paired100); "
        "twin JPEG quality uniform in 30-100 (PLADA RandomCmp); unpaired images raw only",
        "epochs": args.epochs,
        "seeds": seeds,
        "test": f"AIGC-Mini test split, {args.n_test_real} reals + {args.n_test_fake} fakes per generator "
        "(fixed subset)",
        "mean_over": "every test generator (the training family's held-out test images included); "
        f"'unseen' keys: mean over {prot['test']} only",
        "conditions": {c: COMPRESSIONS.get(c, "none") for c in CONDITIONS},
        "detectors": {m: {"name": n, "overrides": o} for m, (n, o) in METHODS.items() if m in methods},
        "std": "population std over seeds of the generator-mean metric",
        "machine": "2 shared CPU cores under heavy load from other jobs, one thread per process; seeds ran "
        "in parallel processes; train_seconds are wall-clock and pessimistic",
    }
    return out


def write_markdown(res: dict[str, Any], path: Path) -> None:
    methods = list(res["methods"])
    lines = ["# Compression robustness on AIGC-Mini (detect_compression)", ""]
    lines.append(
        f"Trained on {res['setup']['train']}; {res['setup']['paired']}; {res['setup']['epochs']} epochs for "
        f"every method; seeds {res['setup']['seeds']}. Means over {res['setup']['mean_over']}; ± is the std over "
        f"seeds. {res['setup']['machine']}."
    )
    for metric in ("auc", "acc", "ap", "eer"):
        rows = [
            {"method": m}
            | {
                c: f"{res['methods'][m][c][metric]:.3f}±{res['methods'][m][c][f'{metric}_std']:.3f}"
                for c in CONDITIONS
            }
            for m in methods
        ]
        lines += [
            "",
            f"## Mean {metric.upper()} per condition",
            "",
            markdown_table(rows, ["method", *CONDITIONS]),
        ]
    rows = [
        {
            "method": m,
            "raw AUC": res["methods"][m]["raw"]["auc"],
            "compressed AUC (mean)": r["auc_compressed_mean"],
            "AUC drop": f"{r['auc_drop']:.3f}±{r['auc_drop_std']:.3f}",
            "AUC drop jpeg30": r["auc_drop_jpeg30"],
            "raw acc": res["methods"][m]["raw"]["acc"],
            "acc drop": f"{r['acc_drop']:.3f}±{r['acc_drop_std']:.3f}",
            "train s": r["train_seconds_mean"],
        }
        for m, r in res["robustness"].items()
    ]
    cols = [
        "method",
        "raw AUC",
        "compressed AUC (mean)",
        "AUC drop",
        "AUC drop jpeg30",
        "raw acc",
        "acc drop",
        "train s",
    ]
    lines += [
        "",
        "## Robustness: raw minus the mean over the 8 compressed conditions",
        "",
        markdown_table(rows, cols),
    ]
    rows = [{"method": m} | {c: res["methods"][m][c]["unseen"]["auc"] for c in CONDITIONS} for m in methods]
    lines += [
        "",
        "## Mean AUC over the unseen generators only",
        "",
        markdown_table(rows, ["method", *CONDITIONS]),
    ]
    gens = list(res["methods"][methods[0]]["raw"]["per_generator"])
    if "token_layer_validation" in res:
        val = res["token_layer_validation"]
        rows = [
            {"layer": layer} | {c: f"{v[c]['auc']:.3f} / {v[c]['acc']:.3f}" for c in v}
            for layer, v in val.items()
        ]
        lines += [
            "",
            "## Token source choice (held-out train-split images, AUC / acc; not test data)",
            "",
            markdown_table(rows, ["tokens", *next(iter(val.values()))]),
        ]
    for cond in ("raw", "jpeg50"):
        rows = [
            {"method": m} | {g: res["methods"][m][cond]["per_generator"][g]["auc"] for g in gens}
            for m in methods
        ]
        lines += [
            "",
            f"## AUC per generator, {cond} (mean over seeds)",
            "",
            markdown_table(rows, ["method", *gens]),
        ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    global CACHE
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--n-train", type=int, default=1500, help="training reals and fakes, each")
    parser.add_argument("--n-test-real", type=int, default=400)
    parser.add_argument("--n-test-fake", type=int, default=200, help="test fakes per generator")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=CACHE, help="trained models and per-seed metrics")
    parser.add_argument("--out", type=Path, default=OUT, help="results folder")
    parser.add_argument(
        "--validate", action="store_true", help="also compare token layers on held-out train data"
    )
    parser.add_argument("--no-write", action="store_true", help="only fill the cache (parallel seed runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    CACHE = args.cache
    CACHE.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.validate:
        validate_layers(args)
    for seed in args.seeds:
        run_seed(seed, args.methods, args)
    if args.no_write:
        return
    res = summarise(args.methods, args.seeds, args)
    if args.validate or (CACHE / "validation.json").is_file():
        res["token_layer_validation"] = validate_layers(args)
    res["setup"]["wall_seconds_last_invocation"] = round(time.perf_counter() - start, 1)
    write_json(args.out / "detect_compression.json", res)
    write_markdown(res, args.out / "detect_compression.md")
    log(f"wrote {args.out / 'detect_compression.json'} and .md")


if __name__ == "__main__":
    main()
