"""MPQ-DM benchmark: FID / precision / recall and packed size of low-bit diffusion models, per method.

For one diffusion model (default: the zoo's pixel DDPM) it samples `--n` images with `--steps` DDIM steps
in full precision, then, for every method and bit setting, quantizes a copy, samples from the same noise
seeds and measures:

- ``fid``, ``precision``, ``recall``: against `--n-ref` real training patches (the data the zoo's
  generators learned), in the feature space of `--features` (default: a seeded random CNN; see
  `aigclab.diffusion.fid` for why and what that means);
- ``fid_to_fp`` and ``mse_to_fp``: how far the quantized samples moved from the full-precision ones;
- ``bytes``: the packed storage size (integer codes at their bit-width plus float side information).

Methods: ``uniform`` (min-max PTQ), ``efficientdm`` (MSE calibration + LoRA distillation), ``mpq-dm``
(OMQ + TRD) at every setting; the ablations ``omq-only`` and ``trd-only`` at `--ablation-settings`.
Results are written after every run (JSON + markdown), and `--resume` skips runs already in the JSON.

Run: nohup python benchmarks/mpq_dm.py > /work/notes/mpq_dm.log 2>&1 &
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigclab.diffusion import create_quant_config, ddim_sample, load_model, parse_bits, quantize_diffusion
from aigclab.diffusion.fid import evaluate, feature_net, frechet_distance, reference_images
from aigclab.reports import markdown_table, write_json

OUT = Path(__file__).parent / "results"
MAIN = ("uniform", "efficientdm", "mpq-dm")
ABLATIONS = ("omq-only", "trd-only")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ddpm", help="ddpm, ldm or tiny")
    p.add_argument("--weights", type=Path, default=None, help="zoo weights folder (default: the shipped one)")
    p.add_argument("--settings", default="W2A4,W4A8,W4A4,W3A4")
    p.add_argument("--ablation-settings", default="W2A4")
    p.add_argument("--n", type=int, default=256, help="generated samples per model")
    p.add_argument("--n-ref", type=int, default=1000, help="real reference patches")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--finetune-steps", type=int, default=100, help="LoRA optimiser steps")
    p.add_argument("--batch-size", type=int, default=4, help="fine-tuning batch")
    p.add_argument("--calib-samples", type=int, default=32)
    p.add_argument("--features", default="random-cnn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="mpq_dm", help="results file stem")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report-only", action="store_true", help="rewrite the markdown from the JSON and stop")
    p.add_argument(
        "--merge",
        default="",
        help="comma-separated result stems of parallel runs (same model and sizes) to merge in",
    )
    return p.parse_args()


def _runs(args: argparse.Namespace) -> list[tuple[str, str]]:
    settings = args.settings.split(",")
    ablate = args.ablation_settings.split(",") if args.ablation_settings else []
    runs = []
    for setting in settings:
        runs += [(m, setting) for m in MAIN]
        runs += [(m, setting) for m in ABLATIONS if setting in ablate]
    return runs


def _markdown(res: dict[str, Any]) -> str:
    rows = [
        {"method": "fp32", "setting": "W32A32", "fid": res["fp_fid"], "precision": res["fp_precision"],
         "recall": res["fp_recall"], "fid_to_fp": 0.0, "bytes": res["fp_bytes"]}
    ]  # fmt: skip
    for method, per in res["results"].items():
        for setting, r in per.items():
            rows.append({"method": method, "setting": setting, **{k: r[k] for k in
                        ("fid", "precision", "recall", "fid_to_fp", "mse_to_fp", "bytes", "mixed_layers", "seconds")}})  # fmt: skip
    rows.sort(key=lambda r: (r["setting"] != "W32A32", r["setting"], r["method"]))
    cols = [
        "method",
        "setting",
        "fid",
        "precision",
        "recall",
        "fid_to_fp",
        "mse_to_fp",
        "bytes",
        "mixed_layers",
        "seconds",
    ]
    head = (
        f"# MPQ-DM benchmark ({res['model']})\n\n"
        f"Model `{res['model']}` (weights sha256 `{str(res.get('weights_sha256'))[:12]}`), {res['n']} samples, "
        f"{res['steps']} DDIM steps, same noise seeds for every row. `fid`, `precision`, `recall`: against "
        f"{res['n_ref']} real training patches in the `{res['features']}` feature space (comparable only within "
        f"this table, not with published FIDs). `fid_to_fp`, `mse_to_fp`: distance to the full-precision samples. "
        f"`bytes`: packed size (codes at their bit-width + float32 side information). Fine-tuning: "
        f"{res['finetune_steps']} LoRA steps, batch {res['batch_size']}; calibration: {res['calib_samples']} "
        "seeds. CPU, one thread. The paper reports a 58% FID decrease vs its baseline at W2A4 (LDM-4, "
        "Inception FID).\n\n"
    )
    return head + markdown_table(rows, cols) + "\n" + _summary(res)


def _decrease(res: dict[str, Any], method: str, base: str, setting: str) -> str | None:
    a = res["results"].get(method, {}).get(setting)
    b = res["results"].get(base, {}).get(setting)
    if not a or not b:
        return None
    return f"{method} {a['fid']:.2f} vs {base} {b['fid']:.2f} ({100 * (b['fid'] - a['fid']) / b['fid']:+.0f}% FID decrease)"


def _summary(res: dict[str, Any]) -> str:
    lines = []
    for setting in res["settings"]:
        pairs = [("mpq-dm", "uniform"), ("mpq-dm", "efficientdm"), ("omq-only", "efficientdm"),
                 ("trd-only", "efficientdm")]  # fmt: skip
        found = [d for m, b in pairs if (d := _decrease(res, m, b, setting))]
        if found:
            lines.append(f"- {setting}: " + "; ".join(found))
    below = sorted(
        f"{m} {st}" for m, per in res["results"].items() for st, r in per.items() if r["fid"] < res["fp_fid"]
    )
    if below:
        lines.append(
            f"- {len(below)} quantized rows have a lower `fid` than full precision ({res['fp_fid']:.2f}): "
            + ", ".join(below)
            + ". There the feature-space FID against real patches does not track fidelity to the trained model; "
            "read `fid_to_fp` and `mse_to_fp` (distance to the full-precision samples from the same noise)."
        )
    return "\n".join(lines) + ("\n" if lines else "")


def _merge(res: dict[str, Any], part: dict[str, Any], stem: str) -> None:
    """Add the runs of a parallel part (same model, weights, sizes and FP samples) to `res`."""
    keys = ("model", "weights_sha256", "n", "n_ref", "steps", "features", "finetune_steps", "fp_fid")
    differ = [k for k in keys if part[k] != res[k]]
    if differ:
        raise SystemExit(f"{stem}: cannot merge, differs in {differ}")
    for method, per in part["results"].items():
        res["results"].setdefault(method, {}).update(per)
    res["settings"] = list(dict.fromkeys([*res["settings"], *part["settings"]]))
    res["merged_from"] = sorted({*res.get("merged_from", []), stem})


def _weights_hash(args: argparse.Namespace) -> str | None:
    if args.model == "tiny":
        return None
    from aigclab.data.zoo import weights_dir

    path = (args.weights or weights_dir()) / f"{args.model}.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    args = _args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    json_path = OUT / f"{args.name}.json"
    if args.report_only:
        res = json.loads(json_path.read_text())
        for stem in filter(None, args.merge.split(",")):
            _merge(res, json.loads((OUT / f"{stem}.json").read_text()), stem)
        write_json(json_path, res)
        (OUT / f"{args.name}.md").write_text(_markdown(res))
        return
    model = load_model(args.model, args.weights)
    net = feature_net(args.features)
    size = model.decode(torch.zeros(1, *model.shape)).shape[-1]
    real = reference_images(size, n_max=args.n_ref, seed=args.seed)
    res: dict[str, Any] = json.loads(json_path.read_text()) if args.resume and json_path.is_file() else {}
    t0 = time.perf_counter()
    fp = ddim_sample(model, args.n, args.steps, torch.Generator().manual_seed(args.seed))
    fp_scores = evaluate(real, fp, net)
    res.update(
        model=args.model, weights_sha256=_weights_hash(args), n=args.n, n_ref=args.n_ref, steps=args.steps, features=args.features,
        finetune_steps=args.finetune_steps, batch_size=args.batch_size, calib_samples=args.calib_samples,
        settings=list(dict.fromkeys([*res.get("settings", []), *args.settings.split(",")])), fp_fid=fp_scores["fid"], fp_precision=fp_scores["precision"],
        fp_recall=fp_scores["recall"], fp_bytes=sum(p.numel() * 4 for p in model.unet.state_dict().values()),
    )  # fmt: skip
    res.setdefault("results", {})
    print(f"fp: {fp_scores} ({time.perf_counter() - t0:.0f}s)", flush=True)
    for method, setting in _runs(args):
        if args.resume and setting in res["results"].get(method, {}):
            continue
        w_bits, a_bits = parse_bits(setting)
        cfg = create_quant_config(
            method, w_bits=w_bits, a_bits=a_bits, steps=args.steps, calib_samples=args.calib_samples,
            batch_size=args.batch_size, seed=args.seed,
            **({"finetune_steps": args.finetune_steps} if method != "uniform" else {}),
        )  # fmt: skip
        q = quantize_diffusion(model, cfg)
        images = ddim_sample(
            model, args.n, args.steps, torch.Generator().manual_seed(args.seed), unet=q.model.unet
        )
        scores = evaluate(real, images, net)
        row = {
            **scores,
            "fid_to_fp": frechet_distance(fp, images, net),
            "mse_to_fp": float(np.mean((images.astype(np.float64) - fp.astype(np.float64)) ** 2)),
            "bytes": q.report.total_bytes,
            "mixed_layers": sum(1 for k in q.omq_k.values() if k),
            "loss_first": q.losses[0] if q.losses else None,
            "loss_last": q.losses[-1] if q.losses else None,
            "seconds": round(q.seconds, 1),
        }
        res["results"].setdefault(method, {})[setting] = row
        write_json(json_path, res)
        (OUT / f"{args.name}.md").write_text(_markdown(res))
        print(f"{method} {setting}: {json.dumps(row)}", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
