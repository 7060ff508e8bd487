"""The `semantics_scenes` section of benchmarks/jacobian_edit.py: object edits on the procedural-scene DDPM.

Held-out scenes (`make_scenes` with seeds the model never saw) are DDIM-inverted; for the quadrant of one
object the top masked directions are found and applied (unprojected, null-space projected, per-direction
projected, random, and the 2nd/3rd direction; image 0's top direction transferred to the other images), and
the scene parser reads back which object attribute changed inside the mask (colour / size / shape /
position, in units of their spread over the data set), whether the object vanished or changed shape class,
how the objects outside the mask changed, the pixel locality ratio, and how consistent the change profile of
one direction is across images. Run through ``python benchmarks/jacobian_edit.py [--scenes]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from aigclab.data.scenes import (
    GROUPS,
    attribute_change,
    attribute_spread,
    change_profile,
    classify_shape,
    make_scenes,
    parse_regions,
    region_mask,
    scene_statistics,
)
from aigclab.data.zoo import from_uint8
from aigclab.diffusion.jacobian_edit import (
    bottleneck_at,
    invert,
    locality,
    masked_eps,
    power_iteration,
    project_away,
    sample_from,
    to_uint8,
)
from aigclab.diffusion.models import ddim_sample, load_model
from aigclab.reports import markdown_table

Spread = Callable[[list[float]], dict[str, float]]
# --- semantics on the procedural-scene DDPM: objects with ground-truth colour, size, shape, position ---

SCENE_SEEDS, PER_REGION = (101, 102, 103), 8  # held-out scene seeds (the scenes DDPM was trained on seed 0)
SCENE_KINDS = ("unprojected", "projected", "per_direction", "random")
SCENE_EDITS = (*SCENE_KINDS, "k1", "k2", "transfer")


def _scene_groups(seed: int, per_region: int):  # type: ignore[no-untyped-def]
    """Per quadrant r: the first ``per_region`` scenes of ``seed`` with an object in r, and their other regions."""
    sc = make_scenes(60 * per_region, seed)
    for r in range(4):
        idx = [i for i, objs in enumerate(sc.objects) if r in {o.region for o in objs}][:per_region]
        yield r, sc.images[idx], [[o.region for o in sc.objects[i] if o.region != r] for i in idx]


def _dominant(z: np.ndarray, a0: np.ndarray, a1: np.ndarray) -> list[str]:
    """Per edit: the group that changed most (in spread units), "vanished" or "absent" (no object before)."""
    out = []
    for zi, b, e in zip(z, a0[:, 0], a1[:, 0], strict=True):
        out.append(
            "absent" if np.isnan(b) else "vanished" if np.isnan(e) else list(GROUPS)[int(np.argmax(zi))]
        )
    return out


def _consistency(prof: np.ndarray, dom: list[str], signed: bool) -> dict[str, object]:
    """Profiles (N, 7) of one direction kind over the images of one (seed, region): mean pairwise (|)cos(|) of
    the rows with an object before and after, and the modal dominant group with its share."""
    ok = prof[~np.isnan(prof).any(1)]
    unit = ok / np.linalg.norm(ok, axis=1, keepdims=True).clip(1e-12)
    cos = [float(unit[i] @ unit[j]) for i, j in itertools.combinations(range(len(unit)), 2)]
    mode = max(set(dom), key=dom.count)
    return {
        "pairwise_cosine": float(np.mean(cos if signed else np.abs(cos))) if cos else float("nan"),
        "dominant": mode,
        "dominant_share": dom.count(mode) / len(dom),
    }


def scenes_section(
    spread: Spread, t0: int, steps: int, iters: int, n_dirs: int, rank: int, smoke: bool = False,
    weights: Path | None = None,
) -> dict[str, object]:  # fmt: skip
    """Edits of one object's quadrant on held-out procedural scenes, read back by the scene parser.

    Settings as in the photo-patch part: inversion to ``t0`` over ``steps`` DDIM steps, ``iters`` power
    iterations, ``n_dirs`` masked and ``rank`` unmasked directions; ``spread`` summarises a list of values.
    """
    model = load_model("scenes", weights)
    sp = attribute_spread()
    seeds, per_region = (SCENE_SEEDS[:1], 2) if smoke else (SCENE_SEEDS, PER_REGION)
    z: dict[str, list[np.ndarray]] = {k: [] for k in SCENE_EDITS}
    dom: dict[str, list[str]] = {k: [] for k in SCENE_EDITS}
    flips: dict[str, list[bool]] = {k: [] for k in SCENE_EDITS}
    loc: dict[str, list[float]] = {k: [] for k in SCENE_KINDS}
    leak: dict[str, list[np.ndarray]] = {k: [] for k in SCENE_KINDS}
    cons: dict[str, list[dict[str, object]]] = {
        k: [] for k in ("unprojected", "k1", "k2", "transfer", "random")
    }
    per_seed: dict[str, dict[str, object]] = {}
    recon, recon_kept = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        seed_loc: dict[str, list[float]] = {k: [] for k in SCENE_KINDS}
        seed_z: dict[str, list[np.ndarray]] = {k: [] for k in SCENE_KINDS}
        for r, images, others in _scene_groups(seed, per_region):
            mask_np = region_mask(32, r)
            mask = torch.from_numpy(mask_np).float()[None, None]
            with torch.no_grad():
                xt = invert(model, from_uint8(images), t0, steps)
                base = sample_from(model, xt, t0, steps)
            h = bottleneck_at(model, xt, t0)
            h_norm = h.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
            u, _ = power_iteration(masked_eps(model, xt, t0, mask), h, n_dirs, gen, iters)
            u1, _ = power_iteration(masked_eps(model, xt, t0, 1 - mask), h, rank, gen, iters)
            n = len(images)
            rnd = torch.randn(h.shape, generator=gen)
            dirs = {
                "unprojected": u[0],
                "projected": torch.stack(
                    [project_away(u[:1, b], u1[:, b], "nullspace")[0] for b in range(n)]
                ),
                "per_direction": torch.stack(
                    [project_away(u[:, b], u1[:n_dirs, b], "per-direction")[0] for b in range(n)]
                ),
                "random": rnd / rnd.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1),
                "k1": u[1],
                "k2": u[2],
                "transfer": u[0, :1],  # image 0's top direction applied to every image of the group
            }
            base_u8 = to_uint8(base)
            a0 = parse_regions(base_u8, mask_np)
            recon.append(attribute_change(parse_regions(images, mask_np), a0, sp))
            recon_kept += (~np.isnan(a0[:, 0])).tolist()
            prof = {}
            for k, d in dirs.items():
                with torch.no_grad():
                    edited = sample_from(model, xt, t0, steps, h_norm * d)
                e_u8 = to_uint8(edited)
                a1 = parse_regions(e_u8, mask_np)
                zk = attribute_change(a0, a1, sp)
                z[k].append(zk)
                dk = _dominant(zk, a0, a1)
                dom[k] += dk
                both = ~np.isnan(a0[:, 5]) & ~np.isnan(a1[:, 5])
                flips[k] += [
                    classify_shape(f0) != classify_shape(f1)
                    for f0, f1 in zip(a0[both, 5], a1[both, 5], strict=True)
                ]
                prof[k] = (change_profile(a0, a1, sp), dk)
                if k in SCENE_KINDS:
                    ratio = locality(edited, base, mask).tolist()
                    loc[k] += ratio
                    seed_loc[k] += ratio
                    seed_z[k].append(zk)
                    for i, regs in enumerate(others):
                        for r2 in regs:
                            m2 = region_mask(32, r2)
                            before, after = (
                                parse_regions(base_u8[i : i + 1], m2),
                                parse_regions(e_u8[i : i + 1], m2),
                            )
                            leak[k].append(attribute_change(before, after, sp)[0])
            for k in cons:
                p, dk = prof[k]
                p, dk = (p[1:], dk[1:]) if k == "transfer" else (p, dk)
                cons[k].append(_consistency(p, dk, signed=k == "transfer"))
            print(f"scenes seed {seed} region {r}", {k: round(float(np.mean(v[-n:])), 1) for k, v in loc.items()},
                  flush=True)  # fmt: skip
        per_seed[str(seed)] = {
            "locality": {k: float(np.mean(v)) for k, v in seed_loc.items()},
            "attribute_change": {
                k: dict(zip(GROUPS, np.nanmean(np.concatenate(v), 0).tolist(), strict=True))
                for k, v in seed_z.items()
            },
        }
    allz = {k: np.concatenate(v) for k, v in z.items()}
    recon_z = np.concatenate(recon)
    gen_images = ddim_sample(model, 64 if smoke else 256, 20, torch.Generator().manual_seed(0))
    return {
        "locality": {k: float(np.mean(v)) for k, v in loc.items()},
        "locality_spread": {k: spread(v) for k, v in loc.items()},
        "projection_paired_relative_change": {
            k: spread([p / u - 1 for p, u in zip(loc[k], loc["unprojected"], strict=True)])
            for k in ("projected", "per_direction")
        },
        "locality_across_seeds": {
            k: {"mean": float(np.mean(m)), "std": float(np.std(m))}
            for k in SCENE_KINDS
            for m in [[s["locality"][k] for s in per_seed.values()]]  # type: ignore[index]
        },
        "attribute_change": {
            k: {g: spread(v[~np.isnan(v[:, j]), j].tolist()) for j, g in enumerate(GROUPS)} for k, v in allz.items()
        },
        "dominant_share": {
            k: {g: v.count(g) / len(v) for g in (*GROUPS, "vanished", "absent")} for k, v in dom.items()
        },
        "shape_class_flip_rate": {k: float(np.mean(v)) if v else float("nan") for k, v in flips.items()},
        "out_of_mask_objects_change": {
            k: dict(zip(GROUPS, np.nanmean(np.stack(v), 0).tolist(), strict=True)) for k, v in leak.items()
        },
        "consistency": {
            k: {
                "pairwise_cosine": spread([c["pairwise_cosine"] for c in v if not np.isnan(c["pairwise_cosine"])]),  # type: ignore[arg-type]
                "dominant": max({c["dominant"] for c in v}, key=[c["dominant"] for c in v].count),  # type: ignore[arg-type]
                "dominant_share": float(np.mean([c["dominant_share"] for c in v])),  # type: ignore[arg-type]
            }
            for k, v in cons.items()
        },
        "per_seed": per_seed,
        "reconstruction": {
            "object_kept": float(np.mean(recon_kept)),
            "attribute_change": {g: spread(recon_z[~np.isnan(recon_z[:, j]), j].tolist()) for j, g in enumerate(GROUPS)},
        },
        "sample_quality": {
            "generated": scene_statistics(gen_images),
            "data": scene_statistics(make_scenes(len(gen_images), SCENE_SEEDS[0]).images),
        },
        "attribute_spread": sp.group,
        "setup": {
            "model": "scenes DDPM 32x32 (zoo pixel DDPM trained on make_scenes(16384, seed=0))",
            "images": f"held-out scenes of seeds {list(seeds)}, {per_region} per quadrant with an object in it",
            "mask": "the object's 16x16 quadrant",
            "t0": t0, "steps": steps, "power_iters": iters, "k": n_dirs, "unmasked_rank": rank,
            "strength": "1 x ||h||, added to h at all sampling steps",
            "units": "attribute change / its spread over the objects of make_scenes(2000, seed=0), as parsed",
        },
    }  # fmt: skip


def scenes_markdown(ss: dict) -> list[str]:  # type: ignore[type-arg]
    """The `semantics_scenes` section as markdown, every number read from the results."""
    st, q, rc = ss["setup"], ss["sample_quality"], ss["reconstruction"]
    rows = [
        "## Object semantics on the procedural-scene DDPM (`semantics_scenes`)",
        "",
        f"Model: {st['model']}. Images: {st['images']}; mask: {st['mask']}; t0 = {st['t0']}, {st['steps']} DDIM "
        f"steps, {st['power_iters']} power iterations, strength {st['strength']}. Attribute changes are read by "
        f"the scene parser and given in units of {st['units']}.",
        "",
        *scenes_headline(ss),
        "",
        "Example (`aigclab diffusion directions scene.png --mask quadrant.png --model scenes --k 3`, held-out scene "
        "`make_scenes(1, seed=777)`, mask = the green square's quadrant; rows: directions 0-2 at -1, 0, +1 x ||h||): "
        "![directions](jacobian_edit_scenes_directions.png)",
        "",
        "Sample quality (parser on 20-step DDIM samples vs the procedural data):",
        "",
        "| set | objects/image | clean share | disk | square | triangle | area mean | area std | fill median |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {k} | {v['objects_per_image']:.2f} | {v['clean_share']:.2f} | {v['share_disk']:.2f} | "
        f"{v['share_square']:.2f} | {v['share_triangle']:.2f} | {v['area_mean']:.1f} | {v['area_std']:.1f} | "
        f"{v['fill_median']:.2f} |"
        for k, v in q.items()
    ]
    ra = rc["attribute_change"]
    rows += [
        "",
        f"Inversion + resampling keeps the object in {rc['object_kept']:.0%} of the masks; its attributes move by "
        + ", ".join(f"{g} {ra[g]['median']:.2f}" for g in ra)
        + " (median, spread units) from the ground truth image.",
        "",
        markdown_table(
            [
                {"direction": k, "locality mean": f"{s['mean']:.1f}",
                 "across-seed std": f"{ss['locality_across_seeds'][k]['std']:.1f}",
                 "median": f"{s['median']:.1f}", "q10": f"{s['q10']:.1f}", "q90": f"{s['q90']:.1f}", "n": s["n"]}
                for k, s in ss["locality_spread"].items()
            ],
            ["direction", "locality mean", "across-seed std", "median", "q10", "q90", "n"],
        ),
    ]  # fmt: skip
    groups = list(ss["attribute_spread"])
    rows += [
        "",
        "Change inside the mask (median over edits, spread units) and which group changed most:",
        "",
        "| edit | " + " | ".join(groups) + " | vanished | shape class flips | dominant (share) |",
        "|---" * (len(groups) + 4) + "|",
    ]
    for k, v in ss["attribute_change"].items():
        d = ss["dominant_share"][k]
        top = max(d, key=d.__getitem__)
        rows.append(
            f"| {k} | "
            + " | ".join(f"{v[g]['median']:.2f}" for g in groups)
            + f" | {d['vanished']:.2f} | {ss['shape_class_flip_rate'][k]:.2f} | {top} ({d[top]:.2f}) |"
        )
    rows += ["", "Change of the objects outside the mask (mean, spread units):", ""]
    rows += ["| edit | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    rows += [
        f"| {k} | " + " | ".join(f"{v[g]:.2f}" for g in groups) + " |"
        for k, v in ss["out_of_mask_objects_change"].items()
    ]
    rows += [
        "",
        "Consistency across the images of one (seed, quadrant): pairwise cosine of the signed change profiles "
        "(|cos| for per-image directions, whose sign is arbitrary; signed for one direction transferred):",
        "",
        markdown_table(
            [
                {"edit": k, "pairwise cos mean": f"{c['pairwise_cosine']['mean']:.2f}",
                 "std": f"{c['pairwise_cosine']['std']:.2f}", "modal dominant": c["dominant"],
                 "share": f"{c['dominant_share']:.2f}"}
                for k, c in ss["consistency"].items()
            ],
            ["edit", "pairwise cos mean", "std", "modal dominant", "share"],
        ),
    ]  # fmt: skip
    return rows


def scenes_headline(ss: dict) -> list[str]:  # type: ignore[type-arg]
    """Summary lines of the scenes section, every number read from the results."""
    ls, la, ac = ss["locality_spread"], ss["locality_across_seeds"], ss["attribute_change"]
    q, pr, d, c = (
        ss["sample_quality"],
        ss["projection_paired_relative_change"],
        ss["dominant_share"],
        ss["consistency"],
    )
    groups = list(ss["attribute_spread"])

    def prof(k: str) -> str:
        return ", ".join(f"{g} {ac[k][g]['median']:.2f}" for g in groups)

    def top(k: str) -> str:
        return max(d[k], key=d[k].__getitem__)

    g, dq = q["generated"], q["data"]
    n_seeds = len(ss["per_seed"])
    return [
        f"- **Sample quality.** Read by the parser, 20-step DDIM samples have {g['objects_per_image']:.2f} objects "
        f"per image (data {dq['objects_per_image']:.2f}), {g['clean_share']:.0%} of them clean (data "
        f"{dq['clean_share']:.0%}); shapes disk/square/triangle {g['share_disk']:.2f}/{g['share_square']:.2f}/"
        f"{g['share_triangle']:.2f} (data {dq['share_disk']:.2f}/{dq['share_square']:.2f}/{dq['share_triangle']:.2f}).",
        f"- **Locality on objects.** Over {ls['unprojected']['n']} (scene, object quadrant) pairs from {n_seeds} "
        f"held-out seeds, the top direction changes the quadrant {ls['unprojected']['median']:.0f}x more per pixel "
        f"than the rest (median; mean {ls['unprojected']['mean']:.0f}, across-seed std of the mean "
        f"{la['unprojected']['std']:.0f}: the ratio is heavy-tailed because a flat background barely changes); "
        f"null-space projected median {ls['projected']['median']:.0f} (paired change {pr['projected']['median']:+.0%}, "
        f"10-90% {pr['projected']['q10']:+.0%} to {pr['projected']['q90']:+.0%}), per-direction "
        f"{ls['per_direction']['median']:.0f} ({pr['per_direction']['median']:+.0%}); random "
        f"{ls['random']['median']:.1f}.",
        f"- **What changes.** Median change inside the mask in spread units: top direction {prof('unprojected')} "
        f"(dominant {top('unprojected')} in {d['unprojected'][top('unprojected')]:.0%}; object vanished in "
        f"{d['unprojected']['vanished']:.0%}, shape class changed in {ss['shape_class_flip_rate']['unprojected']:.0%}); "
        f"2nd direction {prof('k1')} (dominant {top('k1')}); 3rd {prof('k2')} (dominant {top('k2')}); random "
        f"{prof('random')}.",
        f"- **Consistency.** The change profile of the top direction found per image agrees across the images of "
        f"one quadrant with mean |cos| {c['unprojected']['pairwise_cosine']['mean']:.2f} (random directions "
        f"{c['random']['pairwise_cosine']['mean']:.2f}); image 0's direction transferred to the others gives a "
        f"signed cosine of {c['transfer']['pairwise_cosine']['mean']:.2f} (modal dominant group "
        f"{c['transfer']['dominant']}, share {c['transfer']['dominant_share']:.0%}).",
    ]
