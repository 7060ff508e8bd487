"""Quantization-conditioned backdoor (QB): attack, real-toolchain transfer, defences and scan, several seeds.

For every task and seed: one clean network is pretrained; from that checkpoint a clean reference continues
with the same budget (lambda 0), and one backdoored model per attacked quantizer continues with the
bi-target loss. Each model is evaluated through every quantization route (the simulated quantizers and the
real toolchains torch.ao and onnxruntime), after each defence, and by the FP-vs-quantized scan.

Writes benchmarks/results/qbackdoor.json and .md:
    {"tasks": {TASK: {QUANTIZER: {"ca_fp", "ca_q", "asr_fp", "asr_q", ..._std, "defences": {...}}}}}
where QUANTIZER is an attacked quantizer evaluated through itself (int8, dorefa, int4) or a real toolchain
row named ROUTE-from-QUANTIZER (the model attacked for QUANTIZER, deployed through ROUTE).

    python benchmarks/qbackdoor.py            # full: digits 3 seeds, aigc-mini 2 seeds (about 1 h on 2 loaded cores)
    python benchmarks/qbackdoor.py --quick    # a few minutes
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigclab.security.defenses import SCAN_THRESHOLD, finetune_defense, noise_defense, scan
from aigclab.security.evaluate import ROUTES, evaluate
from aigclab.security.qbackdoor import QUANTIZERS, QBConfig, train_qbackdoor
from aigclab.security.tasks import load_task

RESULTS = Path(__file__).parent / "results"
METRICS = ("ca_fp", "ca_q", "asr_fp", "asr_q")
# Real toolchain rows: (attacked quantizer, deploy route).
TOOLCHAINS = (("int8", "torch-ao"), ("int8", "onnxruntime"), ("int4", "onnxruntime-int4"))
DEPLOY_BITS = {"int8": 8, "dorefa": 8, "int4": 4}


def run_seed(task: str, seed: int, quantizers: list[str], quick: bool) -> dict[str, Any]:
    cfg = QBConfig.from_preset("aigclab.security", f"qb-{task}", seed=seed)
    if quick:
        cfg = cfg.model_copy(update={"pretrain_epochs": 3, "epochs": 4})
    data = load_task(task)
    t0 = time.perf_counter()
    pre, _ = train_qbackdoor(
        cfg.model_copy(update={"lam": 0.0, "epochs": cfg.pretrain_epochs, "pretrain_epochs": 0})
    )
    out: dict[str, Any] = {"pretrain_s": time.perf_counter() - t0}
    clean, _ = train_qbackdoor(cfg.model_copy(update={"lam": 0.0}), model=copy.deepcopy(pre))
    out["clean"] = {"routes": evaluate(clean, data), "scan": scan(clean, data.x_test)}
    for q in quantizers:
        t0 = time.perf_counter()
        model, log = train_qbackdoor(cfg.model_copy(update={"quantizer": q}), model=copy.deepcopy(pre))
        train_s = time.perf_counter() - t0
        defences = {
            "noise": noise_defense(model, sigma=0.5, bits=DEPLOY_BITS[q], seed=seed),
            "finetune": finetune_defense(model, data, seed=seed),
        }
        out[q] = {
            "train_s": train_s,
            "final_loss": log[-1],
            "routes": evaluate(model, data),
            "defences": {name: evaluate(m, data, routes=[q])[q] for name, m in defences.items()},
            "scan": scan(model, data.x_test),
        }
        print(f"  {task} seed {seed} {q}: {out[q]['routes'][q]} ({train_s:.0f} s)", flush=True)
    return out


def _mean_std(rows: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in METRICS:
        values = np.array([r[key] for r in rows])
        out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    out["seeds"] = len(rows)
    return out


def summarise(task: str, seeds: list[dict[str, Any]], quantizers: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for q in quantizers:
        table[q] = _mean_std([s[q]["routes"][q] for s in seeds])
        table[q]["defences"] = {
            name: _mean_std([s[q]["defences"][name] for s in seeds]) for name in ("noise", "finetune")
        }
    for q, route in TOOLCHAINS:
        if q in quantizers:
            table[f"{route}-from-{q}"] = _mean_std([s[q]["routes"][route] for s in seeds])
    table["clean"] = {route: _mean_std([s["clean"]["routes"][route] for s in seeds]) for route in ROUTES}
    table["matrix"] = {
        q: {route: _mean_std([s[q]["routes"][route] for s in seeds]) for route in ROUTES} for q in quantizers
    }
    table["scan"] = {
        "threshold": SCAN_THRESHOLD,
        "clean_flag_rate": float(np.mean([s["clean"]["scan"]["flagged"] for s in seeds])),
        "backdoored_flag_rate": {
            q: float(np.mean([s[q]["scan"]["flagged"] for s in seeds])) for q in quantizers
        },
        "clean_max_disagreement": [s["clean"]["scan"]["max"] for s in seeds],
        "backdoored_max_disagreement": {q: [s[q]["scan"]["max"] for s in seeds] for q in quantizers},
    }
    table["train_s_per_model"] = float(np.mean([s[q]["train_s"] for s in seeds for q in quantizers]))
    return table


def _fmt(m: dict[str, float], key: str) -> str:
    return f"{m[key]:.3f} ± {m[f'{key}_std']:.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Quantization-conditioned backdoor (QB)",
        "",
        "Targets from the literature: clean accuracy within 1 point of a clean model, ASR at full precision "
        "under 2%, after quantization over 95%. Mean ± std over seeds; fractions.",
        "",
    ]
    for task, table in result["tasks"].items():
        clean = table["clean"]
        lines += [
            f"## {task}",
            "",
            f"Clean reference (same budget): CA fp {_fmt(clean['int8'], 'ca_fp')}.",
            "",
            "| attacked quantizer -> deployed through | CA fp | CA q | ASR fp | ASR q | ASR q after noise | ASR q after fine-tune |",
            "|---|---|---|---|---|---|---|",
        ]
        for q in result["quantizers"][task]:
            m = table[q]
            d = m["defences"]
            lines.append(
                f"| {q} -> {q} (simulated) | {_fmt(m, 'ca_fp')} | {_fmt(m, 'ca_q')} | {_fmt(m, 'asr_fp')} | "
                f"{_fmt(m, 'asr_q')} | {_fmt(d['noise'], 'asr_q')} | {_fmt(d['finetune'], 'asr_q')} |"
            )
        for q, route in TOOLCHAINS:
            key = f"{route}-from-{q}"
            if key in table:
                m = table[key]
                lines.append(
                    f"| {q} -> {route} (real toolchain) | {_fmt(m, 'ca_fp')} | {_fmt(m, 'ca_q')} | "
                    f"{_fmt(m, 'asr_fp')} | {_fmt(m, 'asr_q')} | | |"
                )
        s = table["scan"]
        lines += [
            "",
            f"Scan (threshold {s['threshold']:.2f} FP-vs-quantized disagreement): clean models flagged "
            f"{s['clean_flag_rate']:.2f}; backdoored flagged "
            + ", ".join(f"{q} {v:.2f}" for q, v in s["backdoored_flag_rate"].items())
            + ".",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", default="digits,aigc-mini")
    parser.add_argument("--out", default="qbackdoor")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    plan = {
        "digits": ([0, 1, 2], list(QUANTIZERS)),
        "aigc-mini": ([0, 1], ["int4"]),  # int8 fails on digits already (see the note); CPU budget
    }
    if args.quick:
        plan = {"digits": ([0], list(QUANTIZERS)), "aigc-mini": ([0], ["int4"])}
    tasks = [t for t in args.tasks.split(",") if t]
    path = RESULTS / f"{args.out}.json"
    runs_by_task: dict[str, Any] = {}
    for task in tasks:
        seeds, quantizers = plan[task]
        t0 = time.perf_counter()
        runs = [run_seed(task, seed, quantizers, args.quick) for seed in seeds]
        runs_by_task[task] = {
            "table": summarise(task, runs, quantizers),
            "quantizers": quantizers,
            "seeds": seeds,
            "wall_s": time.perf_counter() - t0,
            "load_average": os.getloadavg(),
        }
    # Tasks run separately (or in parallel) accumulate in one file: re-read it just before writing.
    result: dict[str, Any] = {"tasks": {}, "quantizers": {}, "seeds": {}, "wall_s": {}, "load_average": {}}
    if path.is_file():
        result = json.loads(path.read_text())
    for task, run in runs_by_task.items():
        result["tasks"][task] = run["table"]
        for key in ("quantizers", "seeds", "wall_s", "load_average"):
            result[key][task] = run[key]
    result["quick"] = args.quick
    result["machine"] = "2 CPU cores shared with other jobs; torch threads 1"
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
