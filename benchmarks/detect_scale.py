"""`aigclab detect` at scale: throughput against the decode floor, peak memory, kill-and-resume.

Builds folders of synthetic camera-like JPEGs (1/f colour fields with edges and sensor noise, i.e.
natural-image statistics, not white noise); large folders repeat a pool of distinct files under
distinct names (hard links). For each size it measures, in the same run:

- the decode floor: the same files decoded to RGB arrays by the stream's own decode (Pillow) in a
  process pool of the same size;
- the default detector through the CLI with the local engine (and the Ray engine on a local cluster);
- peak resident memory of the whole job (the CLI process and its workers, sampled every 0.2 s);
- where time goes per image in one process: decode, patching, feature, search;
- once: a run killed (SIGTERM) at about half way and resumed with --resume: rows and unique paths.

    python benchmarks/detect_scale.py --quick                       # trial size, a minute or two
    python benchmarks/detect_scale.py --sizes 1000x3,1000x12        # what ran for the results file
    python benchmarks/detect_scale.py --sizes 1000x3,5000x3,20000x3,1000x12 --engines local,ray
    python benchmarks/detect_scale.py --refloor     # measure the decode floors again, update ratios

Writes benchmarks/results/detect_scale.json and .md. Not run in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

RESULTS = Path(__file__).parent / "results"
CLI = [str(Path(sys.executable).parent / "aigclab"), "detect"]
DEFAULT_PATCHES = 64  # what the default detector reads per image (runs at other counts pass --max-patches)  # the console script beside this Python


def camera_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A 1/f colour field with a few hard-edged shapes and mild sensor noise, as uint8 RGB."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w)) ** 1.1
    img = np.empty((h, w, 3), np.float32)
    base = np.fft.irfft2(amp * np.exp(2j * np.pi * rng.random((h, w // 2 + 1))), s=(h, w))
    for c in range(3):
        tint = np.fft.irfft2(amp * np.exp(2j * np.pi * rng.random((h, w // 2 + 1))), s=(h, w))
        img[..., c] = base + 0.35 * tint
    img -= img.min()
    img *= 200.0 / img.max()
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(6):  # objects with sharp borders
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(min(h, w) // 20, min(h, w) // 5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += rng.uniform(-60, 60, 3).astype(np.float32)
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _make_one(job: tuple[Path, int, int, int]) -> None:
    path, seed, h, w = job
    Image.fromarray(camera_like(np.random.default_rng(seed), h, w)).save(path, quality=90)


def build_folder(root: Path, n: int, megapixels: float, distinct: int, workers: int) -> Path:
    """`n` JPEGs of about `megapixels` (4:3), `distinct` different files hard-linked under distinct names."""
    folder = root / f"{n}x{megapixels:g}mp"
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return folder
    w = round((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = round(w * 3 / 4)
    pool = root / f"pool_{megapixels:g}mp"
    pool.mkdir(parents=True, exist_ok=True)
    jobs = [
        (pool / f"src_{i:03d}.jpg", i, h, w)
        for i in range(distinct)
        if not (pool / f"src_{i:03d}.jpg").exists()
    ]
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(_make_one, jobs))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        link = folder / f"img_{i:06d}.jpg"
        if not link.exists():
            os.link(pool / f"src_{i % distinct:03d}.jpg", link)
    return folder


def _decode(paths: list[str]) -> int:
    from aigclab.io import decode_image

    for p in paths:
        decode_image(p)
    return len(paths)


def decode_floor(folder: Path, workers: int) -> float:
    """Images/s decoding every file to an RGB array in a pool of `workers` processes, with the stream's
    own decode (`aigclab.io.decode_image`: Pillow, no extra copy), so the ratio is what detection adds."""
    paths = sorted(str(p) for p in folder.iterdir())
    chunks = [paths[i : i + 4] for i in range(0, len(paths), 4)]
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(_decode, chunks[: 2 * workers]))  # start the workers before timing
        t = time.perf_counter()
        n = sum(ex.map(_decode, chunks))
    return n / (time.perf_counter() - t)


def _tree_rss(proc: psutil.Process) -> float:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def run_cli(args: list[str], kill_at: int | None = None, out: Path | None = None) -> dict:
    """Run `aigclab detect` and sample its process tree's resident memory; SIGTERM after `kill_at` rows."""
    start = time.perf_counter()
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps, peak = psutil.Process(proc.pid), 0.0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(ps))
        if kill_at is not None and out is not None and out.exists() and sum(1 for _ in out.open()) >= kill_at:
            proc.send_signal(signal.SIGTERM)
            kill_at = None
        time.sleep(0.2)
    text = proc.stdout.read() if proc.stdout else ""
    speed = re.search(r"([\d.]+) images/s", text)
    return {
        "rc": proc.returncode,
        "wall_s": round(time.perf_counter() - start, 1),
        "img_per_s": float(speed.group(1)) if speed else None,
        "peak_rss_mb": round(peak, 1),
        "tail": text[-600:],
    }


def profile(folder: Path, n: int = 24) -> dict:
    """Milliseconds per image for each stage, in one process (the default detector)."""
    import torch
    from threadpoolctl import threadpool_limits

    from aigclab.detect.base import feature_memory
    from aigclab.detect.default import default_detector
    from aigclab.detect.pipeline import bound_aspect, cut_patches
    from aigclab.io import decode_image

    torch.set_num_threads(1)
    threadpool_limits(1)
    det = default_detector()
    stages = dict.fromkeys(("decode", "patching", "feature", "search"), 0.0)
    paths = sorted(folder.iterdir())[:n]
    for p in paths:
        t0 = time.perf_counter()
        img = decode_image(p)
        t1 = time.perf_counter()
        img, _ = bound_aspect(img, det.patch_size, det.max_patches)
        patches = cut_patches(img, det.patch_size, det.max_patches)
        del img
        t2 = time.perf_counter()
        with feature_memory(False):  # as the CLI stream: files of the pool repeat, and must cost a pass
            feats = det.extractor(patches)
        t3 = time.perf_counter()
        det.log_kernel(feats)
        t4 = time.perf_counter()
        for k, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[k] += dt
    return {k: round(1000 * v / len(paths), 2) for k, v in stages.items()}


def start_ray(workers: int) -> str:
    import ray

    for attempt in range(3):  # a heavily loaded machine can time the node start out
        try:
            return _ray_init(ray, workers)
        except Exception as err:
            print(f"ray start attempt {attempt + 1} failed: {err}", flush=True)
            ray.shutdown()
    raise SystemExit("could not start a local Ray cluster")


def _ray_init(ray, workers: int) -> str:  # type: ignore[no-untyped-def]
    ray.init(
        address="local",
        num_cpus=workers,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    return ray.get_runtime_context().gcs_address


def resume_check(folder: Path, out: Path, workers: int) -> dict:
    n = len(list(folder.iterdir()))
    args = [str(folder), "--out", str(out), "--workers", str(workers), "--batch-size", str(max(4, n // 20))]
    first = run_cli(args, kill_at=n // 2, out=out)
    second = run_cli([*args, "--resume"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {
        "files": n,
        "rows": len(rows),
        "unique": len({r["file"] for r in rows}),
        "killed_rc": first["rc"],
        "rows_before_resume": int(re.search(r"(\d+) already in the output", second["tail"]).group(1))
        if "already in the output" in second["tail"]
        else None,
    }


HOSTILE = {
    "deflate_bomb_8000x8000_png": lambda p: Image.new("L", (8000, 8000)).save(p.with_suffix(".png")),
    "float_tiff_8000x8000": lambda p: Image.fromarray(np.zeros((8000, 8000), np.float32)).save(
        p.with_suffix(".tif"), compression="tiff_adobe_deflate"
    ),
    "cmyk_jpeg_8000x8000": lambda p: Image.new("CMYK", (8000, 8000), (10, 20, 30, 40)).save(
        p.with_suffix(".jpg")
    ),
    "line_1x64000000_png": lambda p: Image.new("L", (64_000_000, 1)).save(p.with_suffix(".png")),
    "line_1x1000000_png": lambda p: Image.new("L", (1_000_000, 1)).save(p.with_suffix(".png")),
}

_WORKER_COST = """
import re, sys, time
from aigclab.detect.pipeline import FileKey, Prep, prepare
t = time.perf_counter()
item = prepare(FileKey(sys.argv[1], None, None), Prep(32, 64, True))
shape = None if item.data is None else list(item.data.shape)
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
print(time.perf_counter() - t, hwm, shape, item.note or item.error)
"""


def hostile(root: Path) -> dict:
    """What one decode worker spends on each hostile file: seconds, peak RSS, what it hands on."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, make in HOSTILE.items():
        path = next(iter(root.glob(name + ".*")), None)
        if path is None:
            make(root / name)
            path = next(iter(root.glob(name + ".*")))
        proc = subprocess.run([sys.executable, "-c", _WORKER_COST, str(path)], capture_output=True, text=True)
        secs, rss, rest = proc.stdout.split(" ", 2)
        out[name] = {
            "file_kb": round(path.stat().st_size / 1024, 1),
            "seconds": round(float(secs), 2),
            "worker_peak_rss_mb": round(float(rss), 1),
            "result": rest.strip(),
        }
        print(name, out[name], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a trial size: 60 images at 3 MP")
    ap.add_argument("--sizes", default="1000x3,1000x12", help="IMAGESxMEGAPIXELS, comma-separated")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--ray-sizes", default="1000x3", help="sizes also run with the Ray engine")
    ap.add_argument(
        "--resume-size",
        default="",
        help="folder for the kill-and-resume check (default: first size; 'none' to skip)",
    )
    ap.add_argument(
        "--merge", action="store_true", help="keep runs of other sizes already in the results file"
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--patches",
        default=str(DEFAULT_PATCHES),
        help="--max-patches values run with the local engine (the default detector's own: 64)",
    )
    ap.add_argument(
        "--distinct", type=int, default=0, help="distinct files per size (default 48 at <= 4 MP, else 24)"
    )
    ap.add_argument("--data", type=Path, default=Path("/tmp/aigclab_detect_scale"))
    ap.add_argument("--out", type=Path, default=RESULTS / "detect_scale.json")
    ap.add_argument(
        "--hostile", action="store_true", help="only measure hostile files -> detect_scale_hostile.json"
    )
    ap.add_argument(
        "--finalize", action="store_true", help="recheck Ray rows against local rows, rewrite the .md"
    )
    ap.add_argument(
        "--refloor", action="store_true", help="measure every size's decode floor again, update ratios"
    )
    args = ap.parse_args()
    if args.finalize:
        finalize(args.out, args.data)
        return
    if args.refloor:
        refloor(args.out, args.data, args.workers)
        return
    if args.hostile:
        res = {
            "per_file_in_one_decode_worker": hostile(args.data / "hostile"),
            "load_avg": os.getloadavg()[0],
        }
        (RESULTS / "detect_scale_hostile.json").write_text(json.dumps(res, indent=2) + "\n")
        return
    sizes = ["60x3"] if args.quick else [x for x in args.sizes.split(",") if x != "none"]
    ray_sizes = set(sizes if args.quick else args.ray_sizes.split(","))
    engines = args.engines.split(",")
    result: dict = {"runs": [], "resume": None, "time_per_image_ms_one_process": {}}
    if not args.merge:
        args.out.unlink(missing_ok=True)
    result |= {
        "machine": f"{os.cpu_count()} cores shared with other jobs (see the load averages); no GPU",
        "workers": args.workers,
        "quick": args.quick,
    }
    patch_counts = [int(k) for k in args.patches.split(",")]
    jobs = [(spec, "local", k) for spec in sizes if "local" in engines for k in patch_counts]
    jobs += [
        (spec, "ray", DEFAULT_PATCHES) for spec in sizes if "ray" in engines and spec in ray_sizes
    ]  # Ray last
    floors: dict[str, float] = {}
    address = None
    for spec, engine, patches in jobs:
        n, mp = int(spec.split("x")[0]), float(spec.split("x")[1])
        distinct = min(n, args.distinct or (48 if mp <= 4 else 24))
        folder = build_folder(args.data, n, mp, distinct=distinct, workers=args.workers)
        if spec not in floors:
            floors[spec] = decode_floor(folder, args.workers)
            result["time_per_image_ms_one_process"][spec] = profile(folder, n=24 if mp <= 4 else 8)
        floor = floors[spec]
        if engine == "ray" and address is None:
            address = start_ray(args.workers)
        out = args.data / f"det_{spec}_{engine}{'' if patches == DEFAULT_PATCHES else f'_p{patches}'}.jsonl"
        extra = ["--engine", "ray", "--address", address or ""] if engine == "ray" else []
        extra += ["--max-patches", str(patches)] if patches != DEFAULT_PATCHES else []
        load = os.getloadavg()[0]
        r = run_cli([str(folder), "--out", str(out), "--workers", str(args.workers), *extra])
        run = {
            "images": n,
            "megapixels": mp,
            "engine": engine,
            "max_patches": patches,
            "img_per_s": r["img_per_s"],
            "decode_floor_img_per_s": round(floor, 2),
            "ratio_to_floor": round(r["img_per_s"] / floor, 3) if r["img_per_s"] else None,
            "peak_rss_mb": r["peak_rss_mb"],
            "rss_scope": "driver process tree" if engine == "ray" else "CLI process + decode workers",
            "wall_s": r["wall_s"],
            "rc": r["rc"],
            "load_avg_1min_before": round(load, 2),
            "load_avg_1min_after": round(os.getloadavg()[0], 2),
        }
        if engine == "ray":
            run["identical_to_local"] = identical(args.data, spec)
        result["runs"] = [x for x in result["runs"] if _run_key(x) != _run_key(run)]
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
        save(result, args.out)
    res_spec = args.resume_size or sizes[0]
    if res_spec != "none":
        n0, mp0 = int(res_spec.split("x")[0]), float(res_spec.split("x")[1])
        res_folder = build_folder(
            args.data, n0, mp0, distinct=min(n0, args.distinct or 48), workers=args.workers
        )
        res_out = args.data / "resume.jsonl"
        res_out.unlink(missing_ok=True)
        result["resume"] = resume_check(res_folder, res_out, args.workers) | {"size": res_spec}
        print(json.dumps(result["resume"]), flush=True)
    save(result, args.out)


def _run_key(run: dict) -> tuple:
    return run["images"], run["megapixels"], run["engine"], run.get("max_patches", DEFAULT_PATCHES)


def identical(data: Path, spec: str) -> bool | None:
    """Whether the Ray run of `spec` wrote exactly the local run's JSONL (None if either is missing)."""
    local, ray = data / f"det_{spec}_local.jsonl", data / f"det_{spec}_ray.jsonl"
    return local.read_bytes() == ray.read_bytes() if local.is_file() and ray.is_file() else None


def finalize(out: Path, data: Path) -> None:
    """Recompute `identical_to_local` of Ray runs from their output files and rewrite the markdown."""
    result = json.loads(out.read_text())
    for run in result["runs"]:
        if run["engine"] == "ray":
            run["identical_to_local"] = identical(data, f"{run['images']}x{run['megapixels']:g}")
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


def refloor(out: Path, data: Path, workers: int) -> None:
    """Measure each size's decode floor again (the current `decode_floor`) and update the ratios."""
    result = json.loads(out.read_text())
    floors: dict[tuple[int, float], float] = {}
    for run in result["runs"]:
        size = (run["images"], run["megapixels"])
        if size not in floors:
            floors[size] = decode_floor(data / f"{size[0]}x{size[1]:g}mp", workers)
            print(f"{size[0]}x{size[1]:g}: decode floor {floors[size]:.2f} img/s", flush=True)
        run["decode_floor_img_per_s"] = round(floors[size], 2)
        run["ratio_to_floor"] = round(run["img_per_s"] / floors[size], 3) if run["img_per_s"] else None
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


def save(result: dict, out: Path) -> None:
    """Write `result`, keeping runs of other sizes already in the file (invocations may overlap)."""
    if out.is_file():
        disk = json.loads(out.read_text())
        mine = {_run_key(r) for r in result["runs"]}
        kept = [r for r in disk["runs"] if _run_key(r) not in mine]
        result["runs"] = kept + result["runs"]
        result["resume"] = result["resume"] or disk.get("resume")
        result.setdefault("superseded", disk.get("superseded"))
        result["time_per_image_ms_one_process"] = (
            disk.get("time_per_image_ms_one_process", {}) | result["time_per_image_ms_one_process"]
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


def markdown(res: dict) -> str:
    lines = [
        "# detect at scale",
        "",
        f"{res['machine']}; {res['workers']} decode workers and as many scoring threads.",
        "Wall-clock figures on a shared machine move with what else runs (load averages in the table):",
        "the decode floor and the detector runs of a size are measured back to back, never at the same",
        "time. Each Ray run's JSONL is compared byte for byte with the local run's (`identical_to_local`).",
        "The decode floor is the stream's own decode alone (`aigclab.io.decode_image`, Pillow) in a pool",
        "of as many processes. Folders repeat a pool of distinct files (hard links); the stream keeps no",
        "features in memory, so a repeated file costs a forward pass like any other.",
        *(["", f"Superseded: {res['superseded']}"] if res.get("superseded") else []),
        "",
        "| images | MP | engine | patches | img/s | decode floor img/s | ratio | peak RSS MB | load before/after "
        "| rows = local |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['images']} | {r['megapixels']:g} | {r['engine']} | {r.get('max_patches', DEFAULT_PATCHES)} | {r['img_per_s']} | "
            f"{r['decode_floor_img_per_s']} | {r['ratio_to_floor']} | {r['peak_rss_mb']} | "
            f"{r['load_avg_1min_before']} / {r['load_avg_1min_after']} | {r.get('identical_to_local', '')} |"
        )
    rs = res["resume"] or {}
    if rs:
        lines += [
            "",
            f"Kill at half way (SIGTERM) and --resume on {rs['size']}: {rs['files']} files, {rs['rows']} rows, "
            f"{rs['unique']} unique paths ({rs['rows_before_resume']} rows were written before the kill).",
        ]
    lines += [
        "",
        "Time per image in one process (ms):",
        "",
        "| size | decode | patching | feature | search |",
        "|---|---|---|---|---|",
    ]
    for spec, p in res["time_per_image_ms_one_process"].items():
        lines.append(f"| {spec} | {p['decode']} | {p['patching']} | {p['feature']} | {p['search']} |")
    hostile_file = RESULTS / "detect_scale_hostile.json"
    if hostile_file.is_file():
        lines += [
            "",
            "Hostile files, one decode worker each (`--hostile`, detect_scale_hostile.json):",
            "",
            "| file | KB on disk | seconds | worker peak RSS MB | handed to the scorer |",
            "|---|---|---|---|---|",
        ]
        for name, h in json.loads(hostile_file.read_text())["per_file_in_one_decode_worker"].items():
            lines.append(
                f"| {name} | {h['file_kb']} | {h['seconds']} | {h['worker_peak_rss_mb']} | {h['result']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
