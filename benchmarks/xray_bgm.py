"""Background Mixup vs. no mixing (and variants) on simulated X-ray scans, two detectors, learning curves.

Same data, step budget and seeds for every augmentation, and *paired* runs: a seed fixes the minibatch
order, donors, flips and zooms (separate random streams from the mixing parameters), so two runs with the
same seed differ only in the mixing. Training scans are rendered by scanner ``vendor-a``; a validation
set of other bags (vendor-a) gives the learning curves (mAP50 every `--eval-every` steps) and the steps
to convergence; one held-out test set of bags is rendered by ``vendor-a`` (same scanner) and by
``vendor-b`` (cross-scanner shift) and is evaluated once, at the end. Each finished run is checkpointed
into the results JSON, so the script resumes.

    python benchmarks/xray_bgm.py                 # full run
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
PRIMARY = ["none", "bgm", "bgm-self"]
SECONDARY = ["bgm-log", "cutmix", "mixup"]
# Converged: the best validation mAP50 is within this of the value reached (see `convergence`).
PLATEAU = 0.02


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--augs", default=",".join(PRIMARY))
    p.add_argument("--detectors", default="faster-rcnn-tiny,fcos-tiny")
    p.add_argument("--steps", default="faster-rcnn-tiny=700,fcos-tiny=1000")
    p.add_argument("--eval-every", default="faster-rcnn-tiny=100,fcos-tiny=125")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-val", type=int, default=60)
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
        args.seeds, args.n_train, args.n_val, args.n_test, args.image_size = 1, 16, 4, 8, 96
        args.steps, args.name = "faster-rcnn-tiny=4,fcos-tiny=4", "xray_bgm_quick"
        args.eval_every = "faster-rcnn-tiny=2,fcos-tiny=2"
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


def convergence(curve: list[dict[str, float]]) -> dict[str, Any]:
    """Steps to convergence of one validation curve: the first checkpoint whose mAP50 is within
    `PLATEAU` of the curve's best; `converged` when the last checkpoint is also within it (no large
    gain left at the end, and no collapse)."""
    best = max(c["val_map50"] for c in curve)
    first = next(c["step"] for c in curve if c["val_map50"] >= best - PLATEAU)
    gain_last_third = curve[-1]["val_map50"] - min(
        c["val_map50"] for c in curve if c["step"] >= curve[-1]["step"] * 2 / 3
    )
    return {
        "steps_to_convergence": int(first),
        "converged": bool(curve[-1]["val_map50"] >= best - PLATEAU and gain_last_third < PLATEAU),
        "best_val_map50": float(best),
    }


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
            conv = [convergence(r["curve"]) for r in rs if r.get("curve")]
            if conv:
                entry["steps_to_convergence"] = float(np.mean([c["steps_to_convergence"] for c in conv]))
                entry["converged"] = f"{sum(c['converged'] for c in conv)}/{len(conv)}"
                entry["curve"] = _mean_curve([r["curve"] for r in rs if r.get("curve")])
            entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in rs]))
            entry["augment_ms_per_image_in_training"] = float(
                np.mean([r["augment_ms_per_image"] for r in rs])
            )
    return table


def _mean_curve(curves: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    steps = [c["step"] for c in curves[0]]
    return [
        {
            "step": step,
            **{
                k: float(np.mean([cv[i][k] for cv in curves if len(cv) > i]))
                for k in ("val_map50", "val_map", "train_loss")
            },
        }
        for i, step in enumerate(steps)
    ]


def steps_to_convergence(detectors: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per detector: the largest steps-to-convergence over its augmentations, and whether all converged."""
    out: dict[str, Any] = {}
    for det, per_aug in detectors.items():
        entries = [e for e in per_aug.values() if "steps_to_convergence" in e]
        if entries:
            out[det] = {
                "steps": int(max(e["steps_to_convergence"] for e in entries)),
                "per_augmentation": {
                    a: e["steps_to_convergence"] for a, e in per_aug.items() if "curve" in e
                },
                "all_converged": all(
                    e["converged"].split("/")[0] == e["converged"].split("/")[1] for e in entries
                ),
            }
    return out


def _delta_line(det: str, per_aug: dict[str, dict[str, Any]], aug: str) -> str | None:
    e, base = per_aug.get(aug), per_aug.get("none")
    if not e or not base or "map50_delta_vs_none" not in e:
        return None
    return (
        f"{aug} mAP50 {e['map50']:.3f} vs none {base['map50']:.3f} "
        f"({e['map50_delta_vs_none']:+.3f}, wins {e['map50_wins_vs_none']}); cross-vendor "
        f"{e['map50_cross_vendor']:.3f} vs {base['map50_cross_vendor']:.3f} "
        f"({e['map50_cross_vendor_delta_vs_none']:+.3f}, wins {e['map50_cross_vendor_wins_vs_none']})"
    )


def headline(detectors: dict[str, Any], conv: dict[str, Any], meta: dict[str, Any]) -> str:
    """The fair comparison first: paired runs against no mixing, at a stated (converged or not) budget."""
    steps = meta["config"]["steps"]
    lines = ["## Headline: BGM against no mixing, paired runs (same minibatches, flips and zooms)\n"]
    for det, per_aug in detectors.items():
        found = [d for aug in per_aug if aug != "none" and (d := _delta_line(det, per_aug, aug))]
        c = conv.get(det, {})
        state = (
            f"validation mAP50 within {PLATEAU} of its best by step {c['steps']} in every run"
            if c.get("all_converged")
            else f"not converged by the end of training in every run (first within {PLATEAU} of the best "
            f"at step {c.get('steps')}; see the curves)"
        )
        n_seeds = len(next(iter(per_aug.values()))["seeds"])
        lines.append(f"- **{det}**, {steps.get(det)} steps, {n_seeds} seed(s), {state}: " + "; ".join(found))
    earlier = meta.get("earlier_unpaired")
    all_dets = {*detectors, *(earlier or {}).get("detectors", {})}
    missing = sorted(d for d in all_dets if d not in detectors)
    if missing:
        lines.append(
            f"- **Not re-run under the paired protocol: {', '.join(missing)}** (no time on the shared machine); "
            "its only evidence is the earlier, unconverged run below."
        )
    absent = [a for a in PRIMARY + SECONDARY if not any(a in per for per in detectors.values())]
    if absent:
        lines.append(f"- Variants implemented but not re-run here: {', '.join(absent)}.")
    lines.append(
        "- The training LR follows a cosine decay to zero, so every validation curve flattens near the end "
        "of its budget; `steps_to_convergence` (first checkpoint within "
        f"{PLATEAU} mAP50 of the best) is therefore an upper bound on what this budget allows, not proof "
        "that longer training would not gain more."
    )
    if earlier:
        old = [
            f"{det} {aug} {d:+.3f} mAP50 ({e['map50_wins_vs_none']})"
            for det, per_aug in earlier["detectors"].items()
            for aug, e in per_aug.items()
            if (d := e.get("map50_delta_vs_none")) is not None
        ]
        lines.append(
            "- Earlier protocol (unpaired minibatches, 3 seeds, Faster R-CNN 300 steps, FCOS 1000 steps; kept "
            "as `earlier_unpaired` in the JSON), test mAP50 change vs none: " + ", ".join(old)
        )
    return "\n".join(lines) + "\n\n"


def write_results(
    args: argparse.Namespace, meta: dict[str, Any], runs: list[dict[str, Any]], done: bool
) -> None:
    detectors = summarise(runs)
    conv = steps_to_convergence(detectors)
    write_json(
        RESULTS / f"{args.name}.json",
        {**meta, "complete": done, "steps_to_convergence": conv, "detectors": detectors, "runs": runs},
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
        "conv_step",
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
                    "conv_step": f"{e.get('steps_to_convergence', float('nan')):.0f} ({e.get('converged', '-')})",
                    "train_s": e["train_seconds"],
                }
            )
    curve_rows = [
        {"detector": det, "aug": aug, **{str(c["step"]): f"{c['val_map50']:.3f}" for c in e.get("curve", [])}}
        for det, per_aug in detectors.items()
        for aug, e in per_aug.items()
    ]
    curve_cols = ["detector", "aug", *dict.fromkeys(k for r in curve_rows for k in r if k.isdigit())]
    timing = [{"aug": a, **t} for a, t in meta["augment_ms_per_image"].items()]
    text = (
        f"# X-ray detection: Background Mixup vs. baselines ({'complete' if done else 'partial'})\n\n"
        + headline(detectors, conv, meta)
        + f"## Setup\n\n{meta['setup']}\n\nmean ± std over seeds; `_xv` = cross-vendor test set (scanner vendor-b); "
        "delta = paired mean difference against `none` on the same seeds (wins/seeds); "
        "train_s = wall-clock seconds on a shared, busy 2-core machine (see the CPU costs below instead).\n\n"
        + markdown_table(rows, cols)
        + "\n\n## Learning curves (validation mAP50 by training step, mean over seeds)\n\n"
        + markdown_table(curve_rows, curve_cols)
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
    earlier_path = RESULTS / f"{args.name}.json"
    if earlier_path.is_file():  # keep the summary of the earlier, unpaired protocol for reference
        earlier = json.loads(earlier_path.read_text())
        meta["earlier_unpaired"] = earlier.get("earlier_unpaired") or {
            "setup": earlier["setup"] + " (unpaired: one random stream for batches and augmentation)",
            "detectors": earlier["detectors"],
        }
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}  # parts that resumed from one file share its runs
    for part in parts:
        for r in part["runs"]:
            runs.setdefault((r["detector"], r["augmentation"], r["seed"]), r)
    write_results(args, meta, list(runs.values()), all(p["complete"] for p in parts))
    print(f"wrote {RESULTS / args.name}.json")


def train_with_curve(
    cfg: TrainConfig, train_data: list[Any], val_data: list[Any], every: int
) -> tuple[torch.nn.Module, dict[str, float], list[dict[str, float]]]:
    """Train, evaluating validation mAP every `every` steps; returns model, timings and the curve."""
    curve: list[dict[str, float]] = []
    losses: list[float] = []

    def checkpoint(step: int, model: torch.nn.Module) -> None:
        v = evaluate(model, val_data)
        curve.append({"step": step, "val_map": v["map"], "val_map50": v["map50"],
                      "train_loss": float(np.mean(losses[-every:]))})  # fmt: skip
        print(f"  {cfg.detector} {cfg.augmentation} seed {cfg.seed}: {curve[-1]}", flush=True)

    model, timing = train(
        cfg, train_data, log=lambda _, loss: losses.append(loss), every=every, on_checkpoint=checkpoint
    )
    return model, timing, curve


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    if args.merge:
        return merge(args)
    augs, detectors = args.augs.split(","), args.detectors.split(",")
    steps = {k: int(v) for k, v in (item.split("=") for item in args.steps.split(","))}
    every = {k: int(v) for k, v in (item.split("=") for item in args.eval_every.split(","))}
    sim = XraySimConfig(image_size=args.image_size)
    train_scans = simulate_split(sim, args.n_train, args.data_seed, "train")
    test_scans = simulate_split(sim, args.n_test, args.data_seed, "test")
    train_data = to_samples(train_scans, "vendor-a")
    val_data = to_samples(simulate_split(sim, args.n_val, args.data_seed, "val"), "vendor-a")
    test_same, test_cross = to_samples(test_scans, "vendor-a"), to_samples(test_scans, "vendor-b")
    meta = {
        "setup": (
            f"{args.n_train} training scans (vendor-a), {args.n_test} test bags rendered by vendor-a and vendor-b, "
            f"{args.n_val} validation bags (vendor-a) for the learning curves (every {every} steps), "
            f"{args.image_size}px, steps {steps}, batch 8, AdamW, flip + zoom 0.85-1.15 for every run, "
            "paired seeds (same minibatches, donors, flips and zooms for every augmentation), "
            f"seeds 0..{args.seeds - 1}, 1 CPU thread, {platform.processor() or platform.machine()}"
        ),
        "config": {**vars(args), "steps": steps, "sim": sim.model_dump()},
        "augment_ms_per_image": augment_timing(augs, train_data),
    }
    path = RESULTS / f"{args.name}.json"
    previous = json.loads(path.read_text())["runs"] if path.is_file() and not args.quick else []
    runs = [r for r in previous if "curve" in r]  # runs of the unpaired protocol (no curve) are redone
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
        model, timing, curve = train_with_curve(cfg, train_data, val_data, every[det])
        same, cross = evaluate(model, test_same), evaluate(model, test_cross)
        run = {"detector": det, "augmentation": aug, "seed": seed, **same}
        run |= {"map_cross_vendor": cross["map"], "map50_cross_vendor": cross["map50"], **timing}
        run |= {"curve": curve, **convergence(curve)}
        runs.append(run)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in run.items()}), flush=True)
        write_results(args, meta, runs, done=False)
    write_results(args, meta, runs, done=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
