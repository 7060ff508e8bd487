"""Benchmark `aigclab serve`: latency and throughput at 1, 4 and 16 clients beside the bare in-process call,
and hostile uploads (each answered with the right 4xx while the server keeps serving in bounded memory and
writes nothing outside its data directory).

The server is the real command (`aigclab serve`, embedded default detector, default concurrency = the
cores, one torch thread per request) in its own process on 127.0.0.1, started in an empty working folder
with TMPDIR pointing at an empty folder, so files it writes anywhere but its data directory are seen.
Every request carries a different image (crops of the shipped photographs at seeded offsets), so the
detector's feature cache never answers in place of the model. The bare call is the same detector built
in this process, decoding the same bytes and scoring them one by one on one thread.

    nice -n 10 python benchmarks/serve.py            # a few minutes on a shared 2-core machine

Writes benchmarks/results/serve.json and serve.md.
"""

from __future__ import annotations

import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

RESULTS = Path(__file__).parent / "results"
CLIENTS = (1, 4, 16)
DETECT_SIZE, EXPLAIN_SIZE = 256, 128
MAX_UPLOAD_MB = 8


def photos() -> list[np.ndarray]:
    from skimage import data

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]


def crops(n: int, size: int, seed: int) -> list[bytes]:
    """`n` distinct JPEG (quality 90) crops of the shipped photos."""
    rng = np.random.default_rng(seed)
    pool, out = photos(), []
    for i in range(n):
        img = pool[i % len(pool)]
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img[y : y + size, x : x + size])).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def snapshot(*roots: Path) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


def post(http: httpx.Client, path: str, field: str, name: str, data: bytes) -> tuple[int, float, dict]:
    start = time.perf_counter()
    r = http.post(path, files=[(field, (name, data, "application/octet-stream"))])
    ms = 1000 * (time.perf_counter() - start)
    try:
        body = r.json()
    except ValueError:
        body = {"raw": r.text[:200]}
    return r.status_code, ms, body | {"_retry_after": r.headers.get("retry-after")}


def load(url: str, path: str, field: str, payloads: list[bytes], clients: int) -> dict[str, float]:
    """`clients` threads share the payloads (one request each); latency percentiles and throughput."""
    chunks = [payloads[i::clients] for i in range(clients)]

    def client(chunk: list[bytes]) -> list[tuple[int, float, dict]]:
        with httpx.Client(base_url=url, timeout=600) as http:
            return [post(http, path, field, f"{i}.jpg", d) for i, d in enumerate(chunk)]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = [a for chunk in pool.map(client, chunks) for a in chunk]
    wall = time.perf_counter() - start
    ok = [ms for status, ms, _ in answers if status == 200]
    return {
        "p50_ms": round(float(np.percentile(ok, 50)), 1),
        "p95_ms": round(float(np.percentile(ok, 95)), 1),
        "rps": round(len(ok) / wall, 3),
        "requests": len(answers),
        "ok": len(ok),
        "busy_503": sum(status == 503 for status, _, _ in answers),
        "other": sum(status not in (200, 503) for status, _, _ in answers),
    }


def bare_detector():  # type: ignore[no-untyped-def]
    """The server's detector, built in this process (one torch thread, as each server request has)."""
    import torch

    from aigclab.detect.default import resolve_detector
    from aigclab.io import decode_image

    torch.set_num_threads(1)
    det = resolve_detector("default")
    det.score([decode_image(crops(1, DETECT_SIZE, 99)[0])])  # warm-up on an image no request carries
    return det


def bare_calls(det, detect_payloads: list[bytes], explain_payloads: list[bytes]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The same detector and explainer in this process, one thread, one image at a time."""
    from aigclab.explain.explainer import create_explainer, explain_image
    from aigclab.io import decode_image

    total, score_only = [], []
    for data in detect_payloads:
        t0 = time.perf_counter()
        img = decode_image(data)
        t1 = time.perf_counter()
        det.verdicts(*det.score_counted([img]))
        t2 = time.perf_counter()
        total.append(1000 * (t2 - t0))
        score_only.append(1000 * (t2 - t1))
    explainer, explain_ms = create_explainer("cues"), []
    for data in explain_payloads:
        t0 = time.perf_counter()
        explain_image(decode_image(data), det, explainer)
        explain_ms.append(1000 * (time.perf_counter() - t0))
    return {
        "bare_call_ms": round(float(np.median(total)), 1),
        "bare_score_ms": round(float(np.median(score_only)), 1),
        "bare_explain_ms": round(float(np.median(explain_ms)), 1),
        "bare_images": len(total),
    }


def png(image: Image.Image, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    image.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def hostile_cases() -> list[tuple[str, str, bytes | None, dict, int]]:
    """(name, kind, file bytes or None for a raw body, raw-request options, expected status)."""
    good = crops(1, DETECT_SIZE, 7)[0]
    buf = io.BytesIO()
    Image.new("F", (4000, 4000)).save(buf, "TIFF", compression="tiff_adobe_deflate")
    float_tiff = buf.getvalue()
    return [
        ("not multipart", "malformed", None, {"content": b"\x00" * 100, "ctype": "image/png"}, 400),
        (
            "broken multipart",
            "malformed",
            None,
            {
                "content": b'--B\r\nContent-Disposition: form-data; name="images"\r\n\r\nxx',
                "ctype": "multipart/form-data; boundary=B",
            },
            400,
        ),
        ("9 MB body over the 8 MB limit", "oversized", os.urandom(9 * 2**20), {}, 413),
        ("JPEG cut in half", "truncated", good[: len(good) // 2], {}, 422),
        ("PNG cut after 200 bytes", "truncated", png(Image.open(io.BytesIO(good)))[:200], {}, 422),
        ("10000x10000 PNG (100 MP)", "decompression bomb", png(Image.new("L", (10_000, 10_000))), {}, 413),
        (
            "8000x8000 PNG (64 MP, at the cap)",
            "decompression bomb within the cap",
            png(Image.new("RGB", (8000, 8000))),
            {},
            200,
        ),
        ("4000x4000 float TIFF, deflate", "decompression bomb within the cap", float_tiff, {}, 200),
        ("1 x 64,000,000 PNG", "extreme aspect ratio", png(Image.new("L", (64_000_000, 1))), {}, 200),
        ("ELF binary named .jpg", "non-image", Path(sys.executable).read_bytes()[:65536], {}, 415),
        ("HTML named .png", "non-image", b"<html><script>alert(1)</script></html>", {}, 415),
        (
            "EPS (Ghostscript) named .png",
            "non-image",
            b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
            {},
            415,
        ),
        ("empty file", "malformed", b"", {}, 422),
    ]


def hostile(url: str, pid: int, watch: list[Path], data_dir: Path) -> dict:
    before_files = snapshot(*watch)
    rss_before = proc_status(pid)  # VmHWM here: the peak of start-up (calibration) and the load runs
    rows = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for name, kind, data, raw, expected in hostile_cases():
            start = time.perf_counter()
            if data is None:
                r = http.post("/v1/detect", content=raw["content"], headers={"content-type": raw["ctype"]})
            else:
                r = http.post("/v1/detect", files=[("images", ("upload.png", data, "image/png"))])
            ms = 1000 * (time.perf_counter() - start)
            body = r.json()
            alive = http.get("/health").status_code == 200
            rows.append(
                {
                    "case": name,
                    "kind": kind,
                    "bytes": len(data) if data is not None else len(raw["content"]),
                    "status": r.status_code,
                    "expected": expected,
                    "ok": r.status_code == expected and "Traceback" not in r.text,
                    "message": body.get("error", {}).get("message")
                    or body["results"][0].get("note", "scored"),
                    "ms": round(ms, 1),
                    "server_alive_after": alive,
                    "rss_mb_after": round(proc_status(pid)["VmRSS"], 1),
                }
            )
        final = post(http, "/v1/detect", "images", "after.jpg", crops(1, DETECT_SIZE, 8)[0])
    status = proc_status(pid)
    new_files = sorted(snapshot(*watch) - before_files)
    return {
        "cases": rows,
        "all_as_expected": all(r["ok"] for r in rows),
        "server_kept_serving": all(r["server_alive_after"] for r in rows) and final[0] == 200,
        "rss_mb_before": round(rss_before["VmRSS"], 1),
        "peak_rss_mb_before_hostile": round(rss_before["VmHWM"], 1),
        "rss_mb_after": round(status["VmRSS"], 1),
        "peak_rss_mb": round(status["VmHWM"], 1),
        "files_written_outside_data_dir": new_files,
        "data_dir_contents": sorted(p.name for p in data_dir.iterdir()),
    }


def markdown(res: dict) -> str:
    lines = [
        "# aigclab serve: latency, throughput and hostile uploads",
        "",
        f"Machine: {res['machine']['cores']} cores **shared with other jobs** (load average "
        f"{res['machine']['load_start']} at start, {res['machine']['load_end']} at the end); figures are "
        "pessimistic. Server: `aigclab serve`, embedded default detector, "
        f"{res['settings']['concurrency']} requests computed at once, queue {res['settings']['queue_limit']}.",
        "",
        f"Bare in-process call (decode + score, one thread, same images): **{res['bare_call_ms']} ms** "
        f"(score only {res['bare_score_ms']} ms); bare explain {res['bare_explain_ms']} ms.",
        "",
        "| endpoint | clients | requests | p50 ms | p95 ms | req/s | 503 |",
        "|---|---|---|---|---|---|---|",
    ]
    for endpoint in ("detect", "explain"):
        for c, r in res[endpoint].items():
            lines.append(
                f"| {endpoint} | {c} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} | {r['rps']} | {r['busy_503']} |"
            )
    h = res["hostile"]
    lines += [
        "",
        f"Detect images {DETECT_SIZE}x{DETECT_SIZE} JPEG, explain images {EXPLAIN_SIZE}x{EXPLAIN_SIZE} JPEG; "
        f"server overhead at 1 client (p50 - bare): {res['server_overhead_ms']} ms.",
        "",
        "## Hostile uploads (POST /v1/detect)",
        "",
        "| case | kind | bytes | status | expected | ms | alive after | RSS MB after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in h["cases"]:
        lines.append(
            f"| {r['case']} | {r['kind']} | {r['bytes']} | {r['status']} | {r['expected']} | {r['ms']} | "
            f"{r['server_alive_after']} | {r['rss_mb_after']} |"
        )
    lines += [
        "",
        f"All as expected: {h['all_as_expected']}; server kept serving: {h['server_kept_serving']}; RSS "
        f"{h['rss_mb_before']} MB before, {h['rss_mb_after']} MB after; peak {h['peak_rss_mb_before_hostile']} MB "
        f"before the hostile uploads (start-up and load runs), {h['peak_rss_mb']} MB after them; files written outside the data dir: {len(h['files_written_outside_data_dir'])}; "
        f"data dir holds {', '.join(h['data_dir_contents']) or 'nothing'}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    detect_n = {1: 8, 4: 12, 16: 32}
    explain_n = {1: 3, 4: 8, 16: 16}
    detect_payloads = crops(sum(detect_n.values()) + 2, DETECT_SIZE, 0)
    explain_payloads = crops(sum(explain_n.values()) + 1, EXPLAIN_SIZE, 1)
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="aigclab-serve-bench-"))
    cwd, tmp, data_dir = work / "cwd", work / "tmp", work / "data"
    cwd.mkdir(), tmp.mkdir()
    port = free_port()
    env = os.environ | {"TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from aigclab.cli import main; main()", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--queue-limit", "32", "--max-upload-mb", str(MAX_UPLOAD_MB)]
    log = (work / "server.log").open("w")
    server = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        det = bare_detector()  # built while the server starts
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited: {(work / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        with httpx.Client(base_url=url, timeout=600) as http:  # warm-up, two images no load run sends
            for d in detect_payloads[:2]:
                post(http, "/v1/detect", "images", "warm.jpg", d)
            post(http, "/v1/explain", "image", "warm.jpg", explain_payloads[0])
            settings = http.get("/health").json()["queue"]
        bare = bare_calls(
            det, detect_payloads[2:10], explain_payloads[1:4]
        )  # server idle; the 1-client images
        print("bare", bare, flush=True)
        res: dict = {"detect": {}, "explain": {}}
        offset = 2
        for c in CLIENTS:
            res["detect"][str(c)] = load(
                url, "/v1/detect", "images", detect_payloads[offset : offset + detect_n[c]], c
            )
            offset += detect_n[c]
            print("detect", c, res["detect"][str(c)], flush=True)
        offset = 1
        for c in CLIENTS:
            res["explain"][str(c)] = load(
                url, "/v1/explain", "image", explain_payloads[offset : offset + explain_n[c]], c
            )
            offset += explain_n[c]
            print("explain", c, res["explain"][str(c)], flush=True)
        res |= bare
        res["server_overhead_ms"] = round(res["detect"]["1"]["p50_ms"] - bare["bare_call_ms"], 1)
        res["hostile"] = hostile(url, server.pid, [cwd, tmp], data_dir)
        print("hostile", json.dumps(res["hostile"], indent=1), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    res["settings"] = {
        "concurrency": settings["concurrency"],
        "queue_limit": settings["capacity"] - settings["concurrency"],
        "max_upload_mb": MAX_UPLOAD_MB,
        "detect_image": f"{DETECT_SIZE}x{DETECT_SIZE} JPEG q90",
        "explain_image": f"{EXPLAIN_SIZE}x{EXPLAIN_SIZE} JPEG q90",
        "torch_threads_per_request": 1,
    }
    res["machine"] = {
        "cores": os.cpu_count(),
        "shared": True,
        "note": "2-core machine shared with other jobs while this ran; wall-clock figures are pessimistic",
        "load_start": round(load_start, 1),
        "load_end": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "serve.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
