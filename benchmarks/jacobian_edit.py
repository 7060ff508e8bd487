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
- semantics on objects (`semantics_scenes`, benchmarks/jacobian_edit_scenes.py): the same edits on the
  procedural-scene DDPM, read back as object colour / size / shape / position by the scene parser.
Writes benchmarks/results/jacobian_edit.json and .md. Run: python benchmarks/jacobian_edit.py
(``--scenes``: rerun only the scenes section, keeping the other keys; ``--smoke``: tiny, under /tmp).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from jacobian_edit_scenes import scenes_markdown, scenes_section
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
    a = np.asarray(v, float)
    if not len(a):  # e.g. an attribute never readable after an edit
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "q10": float("nan"),
                "q90": float("nan"), "n": 0}  # fmt: skip
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
    result["semantics_scenes"] = scenes_section(spread, T0, STEPS, ITERS, K, R, smoke)
    write(result)


def write(result: dict) -> None:  # type: ignore[type-arg]
    OUT.mkdir(exist_ok=True)
    (OUT / "jacobian_edit.json").write_text(json.dumps(result, indent=2))
    (OUT / "jacobian_edit.md").write_text(markdown(result))


def headline(r: dict) -> list[str]:  # type: ignore[type-arg]
    """Summary lines, every number read from the results."""
    ls, d, im = r["locality_spread"], r["projection_diagnostics"], r["inside_mask_mse"]
    u, rnd, pr = ls["unprojected"], ls["random"], r["projection_paired_relative_change"]["projected"]
    sem = r["semantics"]

    def avg(edit: str, key: str) -> float:
        return float(np.mean([per[edit][key] for per in sem.values()]))

    prof = {a: float(np.mean([per["k0"]["mean_profile_abs"][a] for per in sem.values()])) for a in ATTRIBUTES}
    top = sorted(prof, key=prof.__getitem__, reverse=True)
    colour = max(prof[a] for a in ("brightness", "saturation", "red_green", "blue_yellow"))
    dom = ", ".join(
        f"{m}: {per['k0']['dominant']} in {per['k0']['dominant_share']:.0%}" for m, per in sem.items()
    )
    ks = ", ".join(f"k={k}: {avg(f'k{k}', 'pairwise_cosine'):.2f}" for k in range(3))
    energy = d["norm_in_top8"]["mean"] ** 2
    by_k = "; ".join(
        f"k={k}: " + ", ".join(per[f"k{k}"]["dominant"] for per in sem.values()) for k in range(3)
    )
    quiet = abs(pr["median"]) < 0.05 and pr["q10"] < 0 < pr["q90"]
    verdict = "no measurable effect in this setting" if quiet else "a measurable effect"
    cb = r["cost_batched"]["cpu_seconds_per_direction_and_image"]
    c1, c4 = r["cost"]["1"], r["cost"]["4"]
    return [
        f"- **Locality.** Over {u['n']} (image, mask) pairs ({r['setup']['images']}, {len(sem)} box masks), an "
        f"edit along the top masked-Jacobian direction changes the masked region {u['mean']:.0f}x more per pixel "
        f"than the rest (median {u['median']:.0f}, 10-90% range {u['q10']:.0f}-{u['q90']:.0f}); a random unit "
        f"h-space direction at the same strength gives {rnd['mean']:.1f} (median {rnd['median']:.1f}; "
        f"1 = no locality). The random edit is also tiny (in-mask MSE {im['random']['mean']:.1e} vs "
        f"{im['unprojected']['mean']:.1e}): h-space is strongly anisotropic, so random is a baseline for *where* "
        "the change lands, not for its size.",
        f"- **Projection: {verdict}.** Null-space projection against the top "
        f"{r['setup']['unmasked_rank']} unmasked directions changes the ratio by {pr['median']:+.1%} (paired "
        f"median; 10-90% {pr['q10']:+.1%} to {pr['q90']:+.1%}), the seed's per-direction variant by "
        f"{r['projection_paired_relative_change']['per_direction']['median']:+.1%}. Why: the top masked direction "
        f"is already nearly orthogonal to the unmasked directions (|cos| with the top one {d['cos_top_unmasked']['mean']:.3f}; "
        f"norm of its component in the top-{r['setup']['unmasked_rank']} span {d['norm_in_top8']['mean']:.3f}, "
        f"{energy:.1%} of its energy), and the unmasked Jacobian's spectrum is flat (sigma_8/sigma_1 = "
        f"{d['unmasked_sigma8_over_sigma1']['mean']:.2f}), so the removed span holds little of what moves the "
        f"outside: the first-order outside change at t0 (in units of the unmasked sigma_1) only drops from "
        f"{d['out_first_order_unprojected']['mean']:.3f} to {d['out_first_order_projected']['mean']:.3f}, while "
        f"{d['in_first_order_kept']['mean']:.1%} of the in-mask effect is kept. Cancelling the outside effect would "
        f"likely need a null space of hundreds of the 4096 h dimensions (~{cb:.2f} CPU s per direction and image each).",
        f"- **What changes (semantics).** Of 7 region attributes defined by construction, the top direction "
        f"mainly changes {top[0]} ({prof[top[0]]:.1f} SD of the attribute across the unedited images), "
        f"{top[1]} ({prof[top[1]]:.1f}) and {top[2]} ({prof[top[2]]:.1f}); brightness and colour move at most "
        f"{colour:.2f} SD. Dominant attribute per mask: {dom}.",
        f"- **Consistency.** Attribute-change profiles of the direction found separately on each image agree "
        f"across images (mean pairwise |cos| {ks}; random directions {avg('random', 'pairwise_cosine'):.2f}). "
        f"The directions themselves are shared: |cos| between two images' top directions is "
        f"{d['direction_cos_across_images']['mean']:.2f} on average (unrelated directions in 4096 dims: ~0.01), "
        f"and image 0's direction applied to the other {u['n'] // len(sem) - 1} images gives a signed profile cosine of "
        f"{avg('transfer', 'pairwise_cosine'):.2f}: the same edit does the same low-level thing everywhere. "
        f"Dominant attribute by index k (per mask): {by_k}.",
        "- **What kind of semantics this is.** At 32x32 on photo patches there are no objects: these are "
        "low-level photometric/texture attributes of the region (contrast, edge energy and orientation, "
        "colour balance), not object attributes. Object attributes (colour, size, shape, position) are measured "
        "on the procedural-scene DDPM below (`semantics_scenes`).",
        f"- **Cost.** {c1['seconds']:.1f} s for one direction, {c4['seconds']:.1f} s for four (linear; null-space "
        f"projection with rank k roughly doubles it) on one image, 1 thread, on a machine shared with 4 other "
        f"jobs (pessimistic); batched over 32 images {cb:.2f} CPU s per direction and image.",
        "",
    ]


def markdown(r: dict) -> str:  # type: ignore[type-arg]
    ls = r["locality_spread"]
    rows = ["# Jacobian edit directions (zoo DDPM, 32x32)", "", *headline(r)]
    rows += ["| direction | locality mean | std | median | q10 | q90 | n |", "|---|---|---|---|---|---|---|"]
    rows += [
        f"| {k} | {s['mean']:.1f} | {s['std']:.1f} | {s['median']:.1f} | {s['q10']:.1f} | {s['q90']:.1f} | {s['n']} |"
        for k, s in ls.items()
    ]
    rows += ["", "| mask | " + " | ".join(ls) + " |", "|---" * (len(ls) + 1) + "|"]
    rows += [
        f"| {m} | " + " | ".join(f"{v[k]:.1f}" for k in ls) + " |" for m, v in r["locality_by_mask"].items()
    ]
    rows += ["", "Paired relative change of the locality ratio vs unprojected (same image and mask):", ""]
    rows += ["| projection | median | q10 | q90 |", "|---|---|---|---|"]
    rows += [
        f"| {k} | {s['median']:+.1%} | {s['q10']:+.1%} | {s['q90']:+.1%} |"
        for k, s in r["projection_paired_relative_change"].items()
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
    if "semantics_scenes" in r:
        rows += ["", *scenes_markdown(r["semantics_scenes"])]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import sys

    if "--markdown" in sys.argv:  # re-render the table from the JSON
        (OUT / "jacobian_edit.md").write_text(markdown(json.loads((OUT / "jacobian_edit.json").read_text())))
    elif "--scenes" in sys.argv:  # (re)run only the scenes section; every other key of the JSON is kept
        torch.set_num_threads(1)
        smoke = "--smoke" in sys.argv
        w = Path(sys.argv[sys.argv.index("--weights") + 1]) if "--weights" in sys.argv else None
        res = json.loads((OUT / "jacobian_edit.json").read_text())
        if smoke:
            ITERS, OUT = 2, Path("/tmp/jacobian_edit_smoke")
        res["semantics_scenes"] = scenes_section(spread, T0, STEPS, ITERS, K, R, smoke, w)
        write(res)
    else:
        main(smoke="--smoke" in sys.argv)
