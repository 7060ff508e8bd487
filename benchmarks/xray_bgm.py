"""Background Mixup vs. no mixing, MixUp and CutMix on simulated X-ray scans, two detectors, 3+ seeds.

Same data, step budget and seeds for every augmentation. Training scans are rendered by scanner
``vendor-a``; one held-out set of bags is rendered by ``vendor-a`` (same scanner) and by ``vendor-b``
(cross-scanner shift). Each finished run is checkpointed into the results JSON, so the script resumes.

    python benchmarks/xray_bgm.py                 # full run (about an hour on 2 shared CPU cores)
    python benchmarks/xray_bgm.py --quick         # smoke test
    # or one process per detector, then merge:
    python benchmarks/xray_bgm.py --detectors fcos-tiny --name xray_bgm_fcos   (and faster-rcnn-tiny)
    python benchmarks/xray_bgm.py --merge xray_bgm_frcnn,xray_bgm_fcos

Writes ``benchmarks/results/xray_bgm.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigclab.augment.coco import simulate_split, to_samples
from aigclab.augment.train_det import TrainConfig, evaluate, train
from aigclab.augment.transforms import DetectionAugment, create_augmentation
from aigclab.augment.xray_sim import XraySimConfig
from aigclab.reports import markdown_table, write_json

RESULTS = Path(__file__).parent / "results"
PRIMARY = ["none", "cutmix", "bgm"]
SECONDARY = ["mixup", "bgm-log"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--augs", default=",".join(PRIMARY + SECONDARY))
    p.add_argument("--detectors", default="faster-rcnn-tiny,fcos-tiny")
    p.add_argument("--steps", default="faster-rcnn-tiny=300,fcos-tiny=1000")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=150)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--name", default="xray_bgm")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 seed: checks the script runs")
    p.add_argument(
        "--merge", default="", help="comma-separated result names (e.g. one per detector) to merge"
    )
    args = p.parse_args()
    if args.quick:
        args.seeds, args.n_train, args.n_test, args.image_size = 1, 16, 8, 96
        args.steps, args.name = "faster-rcnn-tiny=4,fcos-tiny=4", "xray_bgm_quick"
    return args


def augment_timing(augs: list[str], samples: list[Any], n: int = 400) -> dict[str, dict[str, float]]:
    """CPU milliseconds per image (robust to a shared machine): flip + zoom + the mixing op applied
    every time (p=1), and the train-time pipeline (mixing with its default probability)."""
    out = {}
    for name in augs:
        row = {}
        for label, mix in (("mix_ms", _always(name)), ("pipeline_ms", create_augmentation(name))):
            aug, rng = DetectionAugment(mix), np.random.default_rng(0)
            start = time.process_time()
            for k in range(n):
                aug(samples[k % len(samples)], samples[(k + 1) % len(samples)], rng)
            row[label] = 1000.0 * (time.process_time() - start) / n
        out[name] = row
    return out


def _always(name: str) -> Any:
    return create_augmentation(name) if name == "none" else create_augmentation(name, p=1.0)


def _train_step_ms(detector: str, samples: list[Any], image_size: int, steps: int = 6) -> float:
    """CPU ms per image of a training step (a 1-step run is subtracted to drop set-up costs)."""
    seconds = []
    for n in (1, 1 + steps):
        start = time.process_time()
        train(TrainConfig(detector=detector, steps=n, image_size=image_size), samples)
        seconds.append(time.process_time() - start)
    return 1000.0 * (seconds[1] - seconds[0]) / (steps * TrainConfig().batch_size)


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean, std and per-seed values per detector and augmentation, and paired deltas against `none`."""
    keys = ["map", "map50", "map_cross_vendor", "map50_cross_vendor"]
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        table.setdefault(run["detector"], {}).setdefault(run["augmentation"], {"runs": []})["runs"].append(
            run
        )
    for per_aug in table.values():
        base = {r["seed"]: r for r in per_aug.get("none", {"runs": []})["runs"]}
        for aug, entry in per_aug.items():
            rs = sorted(entry.pop("runs"), key=lambda r: r["seed"])
            for k in keys:
                vals = np.array([r[k] for r in rs])
                entry[k] = float(vals.mean())
                entry[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
                entry[f"{k}_per_seed"] = [float(v) for v in vals]
                paired = [r[k] - base[r["seed"]][k] for r in rs if r["seed"] in base]
                if aug != "none" and paired:
                    entry[f"{k}_delta_vs_none"] = float(np.mean(paired))
                    entry[f"{k}_wins_vs_none"] = f"{sum(d > 0 for d in paired)}/{len(paired)}"
            entry["seeds"] = [r["seed"] for r in rs]
            entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in rs]))
            entry["augment_ms_per_image_in_training"] = float(
                np.mean([r["augment_ms_per_image"] for r in rs])
            )
    return table


def write_results(
    args: argparse.Namespace, meta: dict[str, Any], runs: list[dict[str, Any]], done: bool
) -> None:
    detectors = summarise(runs)
    write_json(
        RESULTS / f"{args.name}.json", {**meta, "complete": done, "detectors": detectors, "runs": runs}
    )
    cols = [
        "detector",
        "aug",
        "seeds",
        "map",
        "map50",
        "map50_delta",
        "map_xv",
        "map50_xv",
        "map50_xv_delta",
        "train_s",
    ]
    rows = []
    for det, per_aug in detectors.items():
        for aug, e in per_aug.items():
            rows.append(
                {
                    "detector": det,
                    "aug": aug,
                    "seeds": len(e["seeds"]),
                    "map": f"{e['map']:.3f} ± {e['map_std']:.3f}",
                    "map50": f"{e['map50']:.3f} ± {e['map50_std']:.3f}",
                    "map50_delta": f"{e.get('map50_delta_vs_none', 0.0):+.3f} ({e.get('map50_wins_vs_none', '-')})",
                    "map_xv": f"{e['map_cross_vendor']:.3f} ± {e['map_cross_vendor_std']:.3f}",
                    "map50_xv": f"{e['map50_cross_vendor']:.3f} ± {e['map50_cross_vendor_std']:.3f}",
                    "map50_xv_delta": f"{e.get('map50_cross_vendor_delta_vs_none', 0.0):+.3f} "
                    f"({e.get('map50_cross_vendor_wins_vs_none', '-')})",
                    "train_s": e["train_seconds"],
                }
            )
    timing = [{"aug": a, **t} for a, t in meta["augment_ms_per_image"].items()]
    text = (
        f"# X-ray detection: Background Mixup vs. baselines ({'complete' if done else 'partial'})\n\n"
        f"{meta['setup']}\n\nmean ± std over seeds; `_xv` = cross-vendor test set (scanner vendor-b); "
        "delta = paired mean difference against `none` on the same seeds (wins/seeds); "
        "train_s = wall-clock seconds on a shared, busy 2-core machine (see the CPU costs below instead).\n\n"
        + markdown_table(rows, cols)
        + "\n\n## Augmentation time per image (CPU ms, one thread)\n\n"
        + markdown_table(timing, ["aug", "mix_ms", "pipeline_ms"])
        + "\n\nFor scale, a training step costs (CPU ms per image, one thread, no augmentation): "
        + ", ".join(f"{d} {v:.1f}" for d, v in meta.get("train_step_ms_per_image", {}).items())
        + "\n"
    )
    (RESULTS / f"{args.name}.md").write_text(text)


def merge(args: argparse.Namespace) -> None:
    """Combine the runs of several partial results (e.g. one process per detector) into `args.name`."""
    parts = [json.loads((RESULTS / f"{name}.json").read_text()) for name in args.merge.split(",")]
    meta = {k: parts[0][k] for k in ("setup", "config")}
    cfg = parts[0]["config"]
    samples = to_samples(
        simulate_split(XraySimConfig(**cfg["sim"]), cfg["n_train"], cfg["data_seed"], "train"), "vendor-a"
    )
    meta["augment_ms_per_image"] = augment_timing(list(parts[0]["augment_ms_per_image"]), samples)
    meta["train_step_ms_per_image"] = {
        det: _train_step_ms(det, samples, cfg["image_size"])
        for det in sorted({r["detector"] for part in parts for r in part["runs"]})
    }
    meta["merged_from"] = args.merge.split(",")
    write_results(args, meta, [r for part in parts for r in part["runs"]], all(p["complete"] for p in parts))
    print(f"wrote {RESULTS / args.name}.json")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    if args.merge:
        return merge(args)
    augs, detectors = args.augs.split(","), args.detectors.split(",")
    steps = {k: int(v) for k, v in (item.split("=") for item in args.steps.split(","))}
    sim = XraySimConfig(image_size=args.image_size)
    train_scans = simulate_split(sim, args.n_train, args.data_seed, "train")
    test_scans = simulate_split(sim, args.n_test, args.data_seed, "test")
    train_data = to_samples(train_scans, "vendor-a")
    test_same, test_cross = to_samples(test_scans, "vendor-a"), to_samples(test_scans, "vendor-b")
    meta = {
        "setup": (
            f"{args.n_train} training scans (vendor-a), {args.n_test} test bags rendered by vendor-a and vendor-b, "
            f"{args.image_size}px, steps {steps}, batch 8, AdamW, flip + zoom 0.85-1.15 for every run, "
            f"seeds 0..{args.seeds - 1}, 1 CPU thread, {platform.processor() or platform.machine()}"
        ),
        "config": {**vars(args), "steps": steps, "sim": sim.model_dump()},
        "augment_ms_per_image": augment_timing(augs, train_data),
    }
    path = RESULTS / f"{args.name}.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() and not args.quick else []
    done_keys = {(r["detector"], r["augmentation"], r["seed"]) for r in runs}
    order = [a for a in PRIMARY if a in augs] + [a for a in augs if a not in PRIMARY]
    plan = [
        (a, s, d)
        for group in (order[:3], order[3:])
        for s in range(args.seeds)
        for a in group
        for d in detectors
    ]
    for aug, seed, det in plan:
        if (det, aug, seed) in done_keys:
            continue
        cfg = TrainConfig(
            detector=det, augmentation=aug, steps=steps[det], image_size=args.image_size, seed=seed
        )
        model, timing = train(cfg, train_data)
        same, cross = evaluate(model, test_same), evaluate(model, test_cross)
        run = {"detector": det, "augmentation": aug, "seed": seed, **same}
        run |= {"map_cross_vendor": cross["map"], "map50_cross_vendor": cross["map50"], **timing}
        runs.append(run)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in run.items()}), flush=True)
        write_results(args, meta, runs, done=False)
    write_results(args, meta, runs, done=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
