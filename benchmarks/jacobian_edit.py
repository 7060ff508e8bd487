"""Benchmark of masked-Jacobian local edit directions on the zoo DDPM (32x32).

Images are the DDPM's own DDIM samples (not training data); masks are 12x12 boxes at fixed corners. For each
(image, mask): invert, find the top direction unprojected / per-direction / null-space projected, draw a
random unit direction, edit every sampling step at strength 1 x ||h||, and measure the locality ratio
(mean squared change inside the mask / outside). Also seconds for k = 1, 2, 4 directions. Writes
benchmarks/results/jacobian_edit.json and .md. Run: python benchmarks/jacobian_edit.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from aigclab.diffusion.jacobian_edit import box_mask, edit, find_directions, invert, locality, sample_from
from aigclab.diffusion.models import ddim_sample, load_model

N_IMAGES, T0, STEPS, ITERS = 6, 500, 8, 10
MASKS = [(2, 2), (18, 18)]
OUT = Path(__file__).parent / "results"


def main() -> None:
    torch.set_num_threads(1)
    model = load_model("ddpm")
    imgs = torch.from_numpy(ddim_sample(model, N_IMAGES, 20, torch.Generator().manual_seed(0)))
    imgs = imgs.permute(0, 3, 1, 2).float() / 127.5 - 1
    ratios: dict[str, list[float]] = {"unprojected": [], "per_direction": [], "projected": [], "random": []}
    gen = torch.Generator().manual_seed(1)
    for i in range(N_IMAGES):
        with torch.no_grad():
            xt = invert(model, imgs[i : i + 1], T0, STEPS)
            base = sample_from(model, xt, T0, STEPS)
        for top, left in MASKS:
            mask = box_mask(32, top, left, 12, 12)
            dirs = {
                name: find_directions(model, xt, T0, mask, 1, proj, iters=ITERS).u[0]  # type: ignore[arg-type]
                for name, proj in [
                    ("unprojected", "none"),
                    ("per_direction", "per-direction"),
                    ("projected", "nullspace"),
                ]
            }
            h_norm = find_directions(model, xt, T0, mask, 1, "none", iters=1).h_norm
            rnd = torch.randn(dirs["projected"].shape, generator=gen)
            dirs["random"] = rnd / rnd.norm()
            with torch.no_grad():
                for name, u in dirs.items():
                    ratios[name].append(
                        float(locality(edit(model, xt, T0, STEPS, u, [h_norm]), base, mask)[0])
                    )
        print(i, {k: round(v[-1], 1) for k, v in ratios.items()}, flush=True)
    with torch.no_grad():
        xt = invert(model, imgs[:1], T0, STEPS)
    cost = {}
    for k in (1, 2, 4):
        d = find_directions(model, xt, T0, box_mask(32, 2, 2, 12, 12), k, "nullspace", iters=ITERS)
        cost[str(k)] = {"seconds": d.seconds, "seconds_per_direction": d.seconds / k}
    summary = {
        name: {"mean": float(np.mean(v)), "std": float(np.std(v)), "median": float(np.median(v)), "n": len(v)}
        for name, v in ratios.items()
    }
    result = {
        "locality": {name: s["mean"] for name, s in summary.items()},
        "locality_spread": summary,
        "cost": cost,
        "setup": {
            "model": "zoo ddpm 32x32",
            "images": N_IMAGES,
            "masks": "12x12 boxes at (2,2),(18,18)",
            "t0": T0,
            "steps": STEPS,
            "power_iters": ITERS,
            "strength": "1 x ||h||, all steps",
            "machine": "2 shared CPU cores, heavily loaded; seconds are pessimistic",
        },
        "semantics": "not measured (no procedural-scene DDPM was trained)",
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "jacobian_edit.json").write_text(json.dumps(result, indent=2))
    rows = ["| direction | locality mean | std | median | n |", "|---|---|---|---|---|"]
    rows += [
        f"| {k} | {s['mean']:.1f} | {s['std']:.1f} | {s['median']:.1f} | {s['n']} |"
        for k, s in summary.items()
    ]
    rows += ["", "| k | seconds | s/direction |", "|---|---|---|"]
    rows += [f"| {k} | {c['seconds']:.1f} | {c['seconds_per_direction']:.1f} |" for k, c in cost.items()]
    (OUT / "jacobian_edit.md").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
