"""Benchmark of masked-Jacobian local edit directions on the zoo DDPM (32x32).

Images: 32 real photo patches from the held-out test photos (4 per photo, evenly spaced; the DDPM was trained
on the train photos). Masks: three boxes of different size and place. For every (image, mask), after DDIM
inversion to t0 = 500, the top K = 3 masked directions and the top R = 8 unmasked directions are found by
batched power iteration; the top direction is then used unprojected, per-direction projected (the seed's
code: minus its component along the top unmasked direction), null-space projected against the top 3 and
against all R = 8 unmasked directions ("projected"), and against a random unit direction of h. Each is applied
at every sampling step at strength 1 x ||h|| (and 0.25 x ||h||).

Measured:
- locality: mean squared change inside the mask / outside it, per (image, mask), with the spread;
- why projection does (not) matter: the overlap of the top masked direction with the unmasked subspace, and the
  first-order (Jacobian at t0) change it causes outside the mask before / after projection;
- semantics (procedural, defined by construction; no classifier): the change of 7 region attributes inside
  the mask (`region_attributes`), in units of their spread over the 32 unedited images, as a profile per edit;
  consistency across images = mean pairwise |cosine| of the profiles and the share of images whose dominant
  attribute is the modal one, for direction index k = 0, 1, 2 found per image, for one direction (image 0's)
  applied to every image ("transfer"), and for random directions (the baseline);
- cost: seconds for k = 1, 2, 4 directions on one image (sequential, as the CLI does), and per direction and
  image in the batched run.
Writes benchmarks/results/jacobian_edit.json and .md. Run: python benchmarks/jacobian_edit.py
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import jvp

from aigclab.data.photos import photo_patches
from aigclab.diffusion.jacobian_edit import (
    ATTRIBUTES,
    bottleneck_at,
    box_mask,
    find_directions,
    invert,
    locality,
    masked_eps,
    power_iteration,
    project_away,
    region_attributes,
    sample_from,
)
from aigclab.diffusion.models import load_model

T0, STEPS, ITERS, K, R = 500, 8, 10, 3, 8
MASKS = {"12x12 at (2,2)": (2, 2, 12), "8x8 at (12,12)": (12, 12, 8), "16x16 at (16,16)": (16, 16, 16)}
OUT = Path(__file__).parent / "results"


def spread(v: list[float]) -> dict[str, float]:
    a = np.asarray(v)
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "median": float(np.median(a)),
        "q10": float(np.quantile(a, 0.1)),
        "q90": float(np.quantile(a, 0.9)),
        "n": len(a),
    }


def consistency(profiles: torch.Tensor, signed: bool) -> dict[str, object]:
    """Profiles (N, A): mean pairwise (|)cosine(|), modal dominant attribute and its share, mean |z|."""
    unit = profiles / profiles.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T
    pairs = [float(cos[i, j]) for i, j in itertools.combinations(range(len(unit)), 2)]
    dom = profiles.abs().argmax(1)
    mode = int(torch.mode(dom).values)
    return {
        "pairwise_cosine": float(np.mean(pairs) if signed else np.mean(np.abs(pairs))),
        "dominant": ATTRIBUTES[mode],
        "dominant_share": float((dom == mode).float().mean()),
        "mean_abs_z": float(profiles.abs().mean()),
        "mean_profile_abs": {a: float(x) for a, x in zip(ATTRIBUTES, profiles.abs().mean(0), strict=True)},
    }


def main(smoke: bool = False) -> None:
    """``smoke``: 4 images, one mask, 2 power iterations, results under /tmp (checks the script runs)."""
    global ITERS, MASKS, OUT
    if smoke:
        ITERS, MASKS, OUT = 2, dict(list(MASKS.items())[:1]), Path("/tmp/jacobian_edit_smoke")
    torch.set_num_threads(1)
    model = load_model("ddpm")
    patches = photo_patches("test", max_per_photo=4).images
    imgs = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 127.5 - 1
    imgs = imgs[:4] if smoke else imgs
    n = len(imgs)
    gen = torch.Generator().manual_seed(0)
    cpu0 = time.process_time()
    with torch.no_grad():
        xt = invert(model, imgs, T0, STEPS)
        base = sample_from(model, xt, T0, STEPS)
    h = bottleneck_at(model, xt, T0)
    h_norm = h.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    kinds = ["unprojected", "per_direction", "nullspace_r3", "projected", "random"]
    loc: dict[str, list[float]] = {k: [] for k in kinds}
    loc_q: dict[str, list[float]] = {k: [] for k in ("unprojected", "projected", "random")}
    loc_mask: dict[str, dict[str, float]] = {}
    inside: dict[str, list[float]] = {k: [] for k in kinds}
    why: dict[str, list[float]] = {
        k: []
        for k in (
            "cos_top_unmasked",
            "norm_in_top3",
            "norm_in_top8",
            "out_first_order_unprojected",
            "out_first_order_projected",
            "in_first_order_kept",
            "direction_cos_across_images",
            "unmasked_sigma8_over_sigma1",
            "masked_sigma3_over_sigma1",
        )
    }
    semantics: dict[str, dict[str, object]] = {}
    pi_seconds = 0.0
    for name, (top, left, size) in MASKS.items():
        mask = box_mask(32, top, left, size, size)
        f_in, f_out = masked_eps(model, xt, T0, mask), masked_eps(model, xt, T0, 1 - mask)
        t = time.process_time()
        u, sig = power_iteration(f_in, h, K, gen, ITERS)  # (K, n, C, 8, 8), (K, n)
        u1, sig1 = power_iteration(f_out, h, R, gen, ITERS)
        pi_seconds += time.process_time() - t
        dirs = {"unprojected": u[0]}
        dirs["per_direction"] = torch.stack(
            [project_away(u[:, b], u1[:K, b], "per-direction")[0] for b in range(n)]
        )
        dirs["nullspace_r3"] = torch.stack(
            [project_away(u[:1, b], u1[:3, b], "nullspace")[0] for b in range(n)]
        )
        dirs["projected"] = torch.stack([project_away(u[:1, b], u1[:, b], "nullspace")[0] for b in range(n)])
        rnd = torch.randn(h.shape, generator=gen)
        dirs["random"] = rnd / rnd.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        # why projection does (not) change much: overlap and first-order change outside the mask at t0
        flat, basis = u[0].flatten(1), u1.flatten(2)  # (n, D), (R, n, D)
        coef = torch.einsum("nd,rnd->nr", flat, basis)
        why["cos_top_unmasked"] += coef[:, 0].abs().tolist()
        why["norm_in_top3"] += coef[:, :3].norm(dim=1).tolist()
        why["norm_in_top8"] += coef.norm(dim=1).tolist()
        out_u = jvp(f_out, (h,), (u[0],))[1].flatten(1).norm(dim=1) / sig1[0]
        out_p = jvp(f_out, (h,), (dirs["projected"],))[1].flatten(1).norm(dim=1) / sig1[0]
        in_p = jvp(f_in, (h,), (dirs["projected"],))[1].flatten(1).norm(dim=1) / sig[0]
        why["out_first_order_unprojected"] += out_u.tolist()
        why["out_first_order_projected"] += out_p.tolist()
        why["in_first_order_kept"] += in_p.tolist()
        why["unmasked_sigma8_over_sigma1"] += (sig1[-1] / sig1[0]).tolist()
        why["masked_sigma3_over_sigma1"] += (sig[-1] / sig[0]).tolist()
        ucos = (flat / flat.norm(dim=1, keepdim=True)) @ (flat / flat.norm(dim=1, keepdim=True)).T
        why["direction_cos_across_images"] += [
            float(ucos[i, j].abs()) for i, j in itertools.combinations(range(n), 2)
        ]
        with torch.no_grad():
            edited = {k: sample_from(model, xt, T0, STEPS, h_norm * d) for k, d in dirs.items()}
            for k in dirs:
                loc[k] += locality(edited[k], base, mask).tolist()
                change = (edited[k] - base).pow(2).mean(1, keepdim=True)
                inside[k] += ((change * mask).sum((1, 2, 3)) / mask.sum()).tolist()
            for k in loc_q:
                loc_q[k] += locality(
                    sample_from(model, xt, T0, STEPS, 0.25 * h_norm * dirs[k]), base, mask
                ).tolist()
            edited.update({f"k{j}": sample_from(model, xt, T0, STEPS, h_norm * u[j]) for j in (1, 2)})
            edited["transfer"] = sample_from(model, xt, T0, STEPS, h_norm * u[0, :1])  # image 0's direction
        loc_mask[name] = {k: float(np.mean(v[-n:])) for k, v in loc.items()}
        a0 = region_attributes(base, mask)
        scale = a0.std(0).clamp_min(1e-6)
        prof = {
            k: (region_attributes(edited[k], mask) - a0) / scale
            for k in ("unprojected", "k1", "k2", "random")
        }
        semantics[name] = {
            "k0": consistency(prof["unprojected"], signed=False),
            "k1": consistency(prof["k1"], signed=False),
            "k2": consistency(prof["k2"], signed=False),
            "transfer": consistency(
                ((region_attributes(edited["transfer"], mask) - a0) / scale)[1:], signed=True
            ),
            "random": consistency(prof["random"], signed=False),
        }
        print(name, loc_mask[name], round(time.process_time() - cpu0), "cpu s", flush=True)
    with torch.no_grad():
        xt1 = invert(model, imgs[:1], T0, STEPS)
    cost = {}
    for k in (1, 2, 4):
        d = find_directions(model, xt1, T0, box_mask(32, 2, 2, 12, 12), k, "none", iters=ITERS)
        dn = find_directions(model, xt1, T0, box_mask(32, 2, 2, 12, 12), k, "nullspace", iters=ITERS)
        cost[str(k)] = {"seconds": d.seconds, "seconds_per_direction": d.seconds / k,
                        "seconds_with_nullspace": dn.seconds}  # fmt: skip
    n_dirs = len(MASKS) * n * (K + R)
    result = {
        "locality": {k: float(np.mean(v)) for k, v in loc.items()},
        "locality_spread": {k: spread(v) for k, v in loc.items()},
        "locality_by_mask": loc_mask,
        "locality_per_pair": {k: [round(x, 4) for x in v] for k, v in loc.items()},
        "projection_paired_relative_change": {
            k: spread([p / u - 1 for p, u in zip(loc[k], loc["unprojected"], strict=True)])
            for k in ("per_direction", "nullspace_r3", "projected")
        },
        "inside_mask_mse": {k: spread(v) for k, v in inside.items()},
        "locality_quarter_strength": {k: spread(v) for k, v in loc_q.items()},
        "projection_diagnostics": {k: spread(v) for k, v in why.items()},
        "semantics": semantics,
        "cost": cost,
        "cost_batched": {"cpu_seconds_per_direction_and_image": pi_seconds / n_dirs, "directions": n_dirs},
        "setup": {
            "model": "zoo ddpm 32x32 (h-space 64x8x8 = 4096 dims)",
            "images": f"{n} real test-photo patches (4 per held-out photo)",
            "masks": list(MASKS),
            "t0": T0,
            "steps": STEPS,
            "power_iters": ITERS,
            "k": K,
            "unmasked_rank": R,
            "strength": "1 x ||h|| (quarter: 0.25 x ||h||), added to h at all sampling steps",
            "attributes": list(ATTRIBUTES),
            "machine": "2 CPU cores shared with 4 other jobs, 1 thread; seconds are pessimistic",
        },
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "jacobian_edit.json").write_text(json.dumps(result, indent=2))
    (OUT / "jacobian_edit.md").write_text(markdown(result))


def markdown(r: dict) -> str:  # type: ignore[type-arg]
    ls = r["locality_spread"]
    rows = ["# Jacobian edit directions (zoo DDPM, 32x32)", ""]
    rows += ["| direction | locality mean | std | median | q10 | q90 | n |", "|---|---|---|---|---|---|---|"]
    rows += [
        f"| {k} | {s['mean']:.1f} | {s['std']:.1f} | {s['median']:.1f} | {s['q10']:.1f} | {s['q90']:.1f} | {s['n']} |"
        for k, s in ls.items()
    ]
    rows += ["", "| mask | " + " | ".join(ls) + " |", "|---" * (len(ls) + 1) + "|"]
    rows += [
        f"| {m} | " + " | ".join(f"{v[k]:.1f}" for k in ls) + " |" for m, v in r["locality_by_mask"].items()
    ]
    rows += ["", "Strength 0.25 x ||h||:", "", "| direction | mean | median | n |", "|---|---|---|---|"]
    rows += [
        f"| {k} | {s['mean']:.1f} | {s['median']:.1f} | {s['n']} |"
        for k, s in r["locality_quarter_strength"].items()
    ]
    rows += ["", "| projection diagnostic | mean | median | q90 |", "|---|---|---|---|"]
    rows += [
        f"| {k} | {s['mean']:.3f} | {s['median']:.3f} | {s['q90']:.3f} |"
        for k, s in r["projection_diagnostics"].items()
    ]
    rows += [
        "",
        "| mask | edit | pairwise cos | dominant attribute | share | mean abs z |",
        "|---|---|---|---|---|---|",
    ]
    for m, per in r["semantics"].items():
        rows += [
            f"| {m} | {e} | {c['pairwise_cosine']:.2f} | {c['dominant']} | {c['dominant_share']:.2f} | {c['mean_abs_z']:.2f} |"
            for e, c in per.items()
        ]
    rows += ["", "| k | seconds | s/direction | seconds with null-space projection |", "|---|---|---|---|"]
    rows += [
        f"| {k} | {c['seconds']:.1f} | {c['seconds_per_direction']:.1f} | {c['seconds_with_nullspace']:.1f} |"
        for k, c in r["cost"].items()
    ]
    cb = r["cost_batched"]
    rows += [
        "",
        f"Batched power iteration: {cb['cpu_seconds_per_direction_and_image']:.2f} CPU s per direction and image.",
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import sys

    if "--markdown" in sys.argv:  # re-render the table from the JSON
        (OUT / "jacobian_edit.md").write_text(markdown(json.loads((OUT / "jacobian_edit.json").read_text())))
    else:
        main(smoke="--smoke" in sys.argv)
