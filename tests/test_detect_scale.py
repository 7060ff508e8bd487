"""The streaming detection job: hostile inputs, output checks, resume after a kill, summary, Ray engine."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.data.mini import load_mini
from aigclab.detect import create_detector, grid_count, to_patches
from aigclab.detect.pipeline import FileKey, Prep, bound_aspect, cut_patches, prepare, score_items
from aigclab.errors import AigclabError

AIGCLAB = str(Path(sys.executable).parent / "aigclab")
RNG = np.random.default_rng(0)


def _png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def det_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small saved FTNet (loads in a fraction of a second, unlike the default's support bank)."""
    train = load_mini("train", generators=["ddpm"])
    idx = np.concatenate([np.flatnonzero(train.labels == c)[:24] for c in (0, 1)])
    det = create_detector("ftnet-tiny").add_support(train.images[idx], train.labels[idx])
    path = tmp_path_factory.mktemp("det") / "ftnet.safetensors"
    det.save(path)
    return path


@pytest.mark.parametrize("shape", [(32, 32), (33, 100), (1000, 37), (300, 200), (64, 4000)])
def test_worker_patches_are_exactly_to_patches(shape: tuple[int, int]) -> None:
    img = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    np.testing.assert_array_equal(cut_patches(img, 32, 64), to_patches(img, 32, 64))


@pytest.mark.parametrize(
    "shape", [(32, 32), (20, 16), (33, 100), (1000, 37), (300, 200), (1, 5000), (90, 31)]
)
def test_grid_count_is_the_number_of_patches_cut(shape: tuple[int, int]) -> None:
    img = np.zeros((*shape, 3), np.uint8)
    for cap in (1, 4, 64):
        assert grid_count(*shape, 32, cap) == len(to_patches(img, 32, cap))


def test_pipeline_scores_equal_detector_score(det_file: Path, tmp_path: Path) -> None:
    from aigclab.detect import load_detector

    det = load_detector(det_file)
    shapes = [(48, 48), (20, 16), (200, 333), (32, 32), (90, 31)]
    paths = [_png(tmp_path / f"{i}.png", h, w, i) for i, (h, w) in enumerate(shapes)]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    rows = score_items(det, [prepare(FileKey(str(p), None, None), Prep.of(det)) for p in paths], Prep.of(det))
    expected, counts = det.score_counted(images)
    assert [r["probability"] for r in rows] == [round(float(p), 4) for p in expected]
    assert [r["patches"] for r in rows] == counts.tolist() == [1, 1, 60, 1, 2]


def test_stream_rows_are_the_same_in_order_on_any_number_of_score_threads(
    det_file: Path, tmp_path: Path
) -> None:
    from aigclab.detect import load_detector
    from aigclab.detect.pipeline import detect_stream, file_key

    det = load_detector(det_file)
    paths = [_png(tmp_path / f"{i:02d}.png", 40 + 7 * i, 60, i) for i in range(11)]
    keys = [file_key(str(p)) for p in paths]
    runs = {
        n: [r for rows in detect_stream(det, keys, workers=1, batch_size=2, score_threads=n) for r in rows]
        for n in (1, 3)
    }
    assert [r["file"] for r in runs[3]] == [str(p) for p in paths]
    assert runs[3] == runs[1]
    expected = det.score([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    assert [r["probability"] for r in runs[3]] == [round(float(x), 4) for x in expected]


def test_faiss_index_is_built_once_under_concurrent_scoring() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from aigclab.detect.ftnet import SupportBank

    bank = SupportBank(index="flat", neighbours=4)
    feats = RNG.normal(size=(40, 16)).astype(np.float32)
    bank.add(feats, np.arange(40) % 2, group="prior")
    with ThreadPoolExecutor(4) as ex:
        built = list(ex.map(lambda _: id(bank._faiss(("prior", 0))), range(16)))
    assert len(set(built)) == 1


def test_extreme_aspect_ratio_is_cropped_with_a_reason() -> None:
    line = np.zeros((1, 100_000, 3), np.uint8)
    crop, note = bound_aspect(line, 32, 64)
    assert crop.shape == (1, 64, 3) and "100000x1" in note and "centre 64x1" in note
    tall = np.zeros((300, 2, 3), np.uint8)
    assert bound_aspect(tall, 32, 64)[0].shape == (128, 2, 3)
    photo = np.zeros((1500, 2000, 3), np.uint8)
    assert bound_aspect(photo, 32, 64) == (photo, None)
    thin = np.zeros((40, 10_000, 3), np.uint8)  # no upscaling needed: left whole
    assert bound_aspect(thin, 32, 64)[1] is None


def test_verdicts_threshold_and_uncertain_band() -> None:
    det = create_detector("ftnet-tiny")
    probs = np.array([0.1, 0.45, 0.5, 0.56, 0.9])
    assert det.verdicts(probs) == ["real", "real", "fake", "fake", "fake"]
    det.set_uncertain(0.1)
    assert det.verdicts(probs) == ["real", "uncertain", "uncertain", "uncertain", "fake"]
    det.band = (0.2, 0.95)  # two ends chosen apart
    assert det.verdicts(probs) == ["real", "uncertain", "uncertain", "uncertain", "uncertain"]


def test_verdicts_take_the_band_of_each_images_patch_count(tmp_path: Path) -> None:
    det = create_detector("ftnet-tiny")
    det.count_bands = {1: (0.5, 0.2, 0.95), 4: (0.5, 0.4, 0.6), 16: (0.55, 0.5, 0.56)}
    probs = np.full(6, 0.58)
    counts = [1, 3, 4, 15, 16, 64]  # each takes the largest calibrated count at or below its own
    assert det.verdicts(probs, counts) == ["uncertain", "uncertain", "uncertain", "uncertain", "fake", "fake"]
    assert det.verdicts(np.array([0.45]), [0]) == ["uncertain"]  # below every count: the smallest
    with pytest.raises(AigclabError, match="2 patch counts"):
        det.verdicts(probs, [1, 2])
    train = load_mini("train", generators=["ddpm"])
    det.add_support(train.images[:8], train.labels[:8])
    det.save(tmp_path / "d.safetensors")
    from aigclab.detect import load_detector

    assert load_detector(tmp_path / "d.safetensors").count_bands == det.count_bands
    det.set_uncertain(0.01)  # a band asked for replaces the calibrated ones
    assert det.count_bands is None and det.verdicts(probs, counts) == ["fake"] * 6


def test_stream_verdicts_use_the_band_of_the_patches_read(det_file: Path, tmp_path: Path) -> None:
    from aigclab.detect import load_detector

    det = load_detector(det_file)
    paths = [_png(tmp_path / "small.png", 32, 32, 1), _png(tmp_path / "big.png", 256, 256, 2)]
    prep = Prep.of(det)
    rows = score_items(det, [prepare(FileKey(str(p), None, None), prep) for p in paths], prep)
    assert [r["patches"] for r in rows] == [1, 64]
    p_small, p_big = (r["probability"] for r in rows)
    det.count_bands = {1: (0.5, 0.0, 1.01), 64: (0.5, -1.0, -1.0)}  # one patch: uncertain; 64: fake
    rows = score_items(det, [prepare(FileKey(str(p), None, None), prep) for p in paths], prep)
    assert [r["verdict"] for r in rows] == ["uncertain", "fake"], (p_small, p_big)


def _hostile_folder(root: Path) -> tuple[Path, dict[str, str]]:
    """Good images and every hostile entry of issues 13 and 22; returns the folder and expected reasons."""
    folder = root / "in"
    folder.mkdir()
    _png(folder / "good.png", 64, 64)
    (folder / "[red]x[").mkdir()
    _png(folder / "[red]x[" / "x].png", 48, 48, 1)  # the path reads as rich markup: [red]x[/x].png
    _png(Path(os.fsdecode(bytes(folder) + b"/caf\xe9.png")), 40, 40, 2)  # not UTF-8
    Image.fromarray(np.zeros((1, 100_000), np.uint8)).save(folder / "line.png")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "urandom.png").symlink_to("/dev/urandom")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "dangling.png").symlink_to(folder / "missing.png")
    (folder / "self").symlink_to(folder)  # a folder loop: walked once
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(18):  # a folder path over 4096 bytes
        name = "d" * 250
        os.mkdir(name, dir_fd=fd)
        fd, old = os.open(name, os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    os.close(os.open("deep.png", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    reasons = {
        "fifo.jpg": "not a regular file (a FIFO)",
        "zero.jpg": "not a regular file (a character device)",
        "urandom.png": "not a regular file (a character device)",
        "loop.jpg": "symbolic link loop",
        "dangling.png": "dangling symbolic link",
    }
    return folder, reasons


def test_hostile_folder_every_path_gets_a_row(det_file: Path, tmp_path: Path) -> None:
    folder, reasons = _hostile_folder(tmp_path)
    out = tmp_path / "res.jsonl"
    t = time.perf_counter()
    result = CliRunner().invoke(
        app, ["detect", str(folder), "--detector", str(det_file), "--out", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - t < 120  # generous; a FIFO or /dev/zero would hang or flood forever
    rows = _rows(out)
    by_name = {os.fsencode(r["file"]).rsplit(b"/", 1)[-1]: r for r in rows}
    for name, reason in reasons.items():
        assert by_name[name.encode()]["skipped"] == reason
    long_rows = [r for r in rows if len(os.fsencode(r["file"])) > 4096]
    assert len(long_rows) == 1 and long_rows[0]["skipped"].startswith("path too long")
    for name in (b"good.png", b"x].png", b"caf\xe9.png", b"line.png"):
        assert by_name[name]["verdict"] in ("real", "fake")
    assert "extreme aspect ratio" in by_name[b"line.png"]["note"]
    assert len(rows) == len(reasons) + 5  # nothing missing, the folder loop walked once
    shown = "".join(c for c in result.output if c not in "│ \n")  # the table wraps long paths
    assert "[red]x[/x].png" in shown and "caf\\xe9.png" in shown
    with (tmp_path / "res.csv").open(encoding="utf-8") as fh:
        assert {r["file"].rsplit("/", 1)[-1] for r in csv.DictReader(fh)} == {
            "good.png",
            "x].png",
            "caf\\xe9.png",
            "line.png",
        }


def test_fifo_and_dev_zero_finish_in_seconds_with_error_lines(tmp_path: Path) -> None:
    """The must-show of issue 13, through the real console script and the default detector."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        _png(folder / f"ok_{i}.png", 96, 96, i)
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    out = tmp_path / "det.jsonl"
    proc = subprocess.run(
        [AIGCLAB, "detect", str(folder), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "fifo.jpg: not a regular file (a FIFO)" in proc.stdout
    assert "zero.jpg: not a regular file (a character device)" in proc.stdout
    rows = _rows(out)
    assert sorted(Path(r["file"]).name for r in rows if "verdict" in r) == [
        "ok_0.png",
        "ok_1.png",
        "ok_2.png",
    ]


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{tmp}", "is a folder"),
        ("/dev/full", "not a regular file"),
        ("/proc/aigclab/det.jsonl", "cannot create the folder"),
        ("{tmp}/det.csv", "CSV written beside it would overwrite them"),
    ],
)
def test_bad_out_fails_before_any_work(tmp_path: Path, out: str, message: str) -> None:
    target = out.format(tmp=tmp_path)
    result = CliRunner().invoke(app, ["detect", str(tmp_path / "none"), "--out", target])
    assert isinstance(result.exception, AigclabError) and message in str(result.exception)
    assert target in str(result.exception) and "\n" not in str(result.exception)


def test_read_only_out_and_missing_parents(det_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["detect", str(tmp_path), "--out", "/proc/version"])  # read-only
    assert isinstance(result.exception, AigclabError) and "cannot write /proc/version" in str(
        result.exception
    )
    _png(tmp_path / "a.png", 40, 40)
    out = tmp_path / "new" / "deeper" / "det.jsonl"
    result = CliRunner().invoke(
        app,
        ["detect", str(tmp_path / "a.png"), "--detector", str(det_file), "--out", str(out), "--workers", "1"],
    )
    assert result.exit_code == 0 and len(_rows(out)) == 1


def test_resume_after_a_torn_write_scores_every_file_once(det_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(9):
        _png(folder / f"{i}.png", 40, 40, i)
    (folder / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "det.jsonl"
    args = ["detect", str(folder), "--detector", str(det_file), "--out", str(out), "--workers", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0
    full = _rows(out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:20])  # killed mid-write
    (folder / "0.png").touch()  # changed since: scored again
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0 and "3 already in the output" in result.output
    rows = _rows(out)
    assert len(rows) == len({r["file"] for r in rows}) + 1 == 11
    assert {r["file"] for r in rows} == {r["file"] for r in full}


def test_sigterm_leaves_valid_output_and_resume_completes(det_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(100):
        _png(folder / f"{i:03d}.png", 160, 160, i)
    out = tmp_path / "det.jsonl"
    cmd = [
        AIGCLAB,
        "detect",
        str(folder),
        "--detector",
        str(det_file),
        "--out",
        str(out),
        "--batch-size",
        "2",
    ]
    proc = subprocess.Popen(
        [*cmd, "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while proc.poll() is None and not (out.exists() and out.stat().st_size > 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in stdout and "--resume" in stdout
    first = _rows(out)  # every line is whole JSON
    assert 0 < len(first) < 100
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    assert len(rows) == len({r["file"] for r in rows}) == 100
    assert "images/s" in done.stdout and "aigclab detect" not in done.stdout  # a summary, not 100 rows


def test_summary_past_forty_files_and_table_all(det_file: Path, tmp_path: Path) -> None:
    for i in range(45):
        _png(tmp_path / f"{i:02d}.png", 32, 32, i)
    args = ["detect", str(tmp_path), "--detector", str(det_file), "--out", str(tmp_path / "o" / "d.jsonl")]
    summary = CliRunner().invoke(app, [*args, "--workers", "1", "--uncertain", "1.0"])
    assert summary.exit_code == 0 and "45 scored" in summary.output and "45 uncertain" in summary.output
    assert "44.png" not in summary.output
    full = CliRunner().invoke(app, [*args, "--workers", "1", "--table", "all"])
    assert full.exit_code == 0 and "44.png" in full.output and "00.png" in full.output


def test_max_patches_reads_fewer_patches_and_says_so(det_file: Path, tmp_path: Path) -> None:
    from aigclab.detect import load_detector

    paths = [_png(tmp_path / f"{i}.png", 160, 224, i) for i in range(3)]  # 35 patches each
    out = tmp_path / "o" / "d.jsonl"
    args = ["detect", str(tmp_path), "--detector", str(det_file), "--out", str(out), "--workers", "1"]
    result = CliRunner().invoke(app, [*args, "--max-patches", "4"])
    assert result.exit_code == 0, result.output
    assert "reading 4 patches per image" in result.output and "uncalibrated" in result.output
    assert {r["patches"] for r in _rows(out)} == {4}
    det = load_detector(det_file)
    det.max_patches = 4
    expected = det.score([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    assert [r["probability"] for r in _rows(out)] == [round(float(x), 4) for x in expected]
    full = load_detector(det_file).score([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    assert not np.allclose(full, expected)  # 35 patches score otherwise than 4
    bad = CliRunner().invoke(app, [*args, "--max-patches", "0", "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "max-patches" in bad.output and not (tmp_path / "x.jsonl").exists()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the [ray] extra is not installed")
def test_ray_cluster_and_local_engine_give_identical_rows(det_file: Path, tmp_path: Path) -> None:
    """A real local Ray cluster; the CLI connects to it by address from its own process."""
    import ray

    folder = tmp_path / "in"
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 40), (100, 70), (20, 24), (300, 200), (64, 64)]):
        _png(folder / f"{i}.png", h, w, i)
    os.mkfifo(folder / "fifo.png")
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False
    )
    try:
        address = ray.get_runtime_context().gcs_address  # Ray set RAY_AUTH_MODE; the CLI inherits it
        common = ["detect", str(folder), "--detector", str(det_file)]
        remote = subprocess.run(
            [AIGCLAB, *common, "--out", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--address", address],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        ray.shutdown()
    assert remote.returncode == 0, remote.stderr
    assert (
        CliRunner().invoke(app, [*common, "--out", str(tmp_path / "local.jsonl"), "--workers", "2"]).exit_code
        == 0
    )
    local, on_ray = _rows(tmp_path / "local.jsonl"), _rows(tmp_path / "ray.jsonl")
    assert local == on_ray and len(local) == 6 and sum("skipped" in r for r in local) == 1


def test_feature_memory_holds_a_byte_budget_and_keeps_what_is_reused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from aigclab.detect import base

    monkeypatch.setattr(base, "_MEMORY", base.OrderedDict())
    monkeypatch.setattr(base, "_memory_used", 0)
    monkeypatch.setattr(base, "_MEMORY_BYTES", 10 * 64 * 4)  # ten 64-float features
    feats = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    base._remember("k", ["a", "b", "c", "d"], feats)
    assert set(base._recall("k", ["a"])) == {0}  # "a" is now the most recently used
    for start in range(0, 40, 4):  # a stream of images seen once each
        base._remember("k", [f"s{i}" for i in range(start, start + 4)], feats)
        assert base._memory_used <= base._MEMORY_BYTES
        assert sum(f.nbytes for f in base._MEMORY.values()) == base._memory_used
    assert len(base._MEMORY) == 10 and "b" not in {h for _, h in base._MEMORY}
    np.testing.assert_array_equal(base._recall("k", ["s39"])[0], feats[3])


def test_the_stream_scores_without_remembering_features(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # a million files scored once each must not fill the feature memory, and a repeated file (a hard link)
    # must cost a forward pass like any other, or throughput figures on repeated files are free
    from aigclab.detect import base
    from aigclab.detect.pipeline import FileKey, Item, Prep, score_items

    det = create_detector("ftnet-tiny")
    rng = np.random.default_rng(0)
    det.add_support(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), np.array([0, 1] * 4))
    monkeypatch.setattr(base, "_MEMORY", base.OrderedDict())
    monkeypatch.setattr(base, "_memory_used", 0)
    calls = []
    compute = base.FeatureExtractor._compute
    monkeypatch.setattr(
        base.FeatureExtractor, "_compute", lambda self, x: calls.append(len(x)) or compute(self, x)
    )
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    items = [Item(FileKey(f"/x/{i}.png", 1, 0), image) for i in range(3)]  # the same pixels three times
    rows = score_items(det, items, Prep.of(det))
    assert len({r["probability"] for r in rows}) == 1 and len(base._MEMORY) == 0
    assert sum(calls) == 3 * len(base.to_patches(image, det.patch_size, det.max_patches))
    det.score(np.stack([image, image]))  # outside the stream the memory still serves repeats
    assert len(base._MEMORY) > 0
