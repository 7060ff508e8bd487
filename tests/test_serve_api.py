"""The serve API through FastAPI's test client: detection, explanation, limits, errors, auth, CORS, review."""

from __future__ import annotations

import base64
import io
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import encode, make_service, photo, tiny_detector

from aigclab.serve.app import create_app


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(make_service(tmp_path / "data")))


def _files(*items: tuple[str, bytes], field: str = "images") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (name, data, "application/octet-stream")) for name, data in items]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb's calling card)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_detect_gives_the_in_process_scores_and_verdicts(client: TestClient) -> None:
    images = [photo(0), photo(1, (40, 300)), photo(2, (128, 128))]
    r = client.post("/v1/detect", files=_files(*((f"{i}.png", encode(im)) for i, im in enumerate(images))))
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    det = tiny_detector()
    expected = det.score(images)
    assert [row["probability"] for row in rows] == pytest.approx(expected, abs=1e-4)
    assert [row["verdict"] for row in rows] == det.verdicts(expected)
    assert [(row["width"], row["height"]) for row in rows] == [(96, 64), (300, 40), (128, 128)]
    assert r.json()["detector"]["class"] == "FTNet"


def test_format_is_sniffed_from_the_content_never_the_name(client: TestClient) -> None:
    jpeg = encode(photo(3), "JPEG", quality=90)
    r = client.post(
        "/v1/detect", files=_files(("holiday.txt", jpeg), ("photo.png", b"GIF? no: plain text, not an image"))
    )
    rows = r.json()["results"]
    assert r.status_code == 200 and 0 <= rows[0]["probability"] <= 1
    assert rows[1]["error"]["status"] == 415 and rows[1]["error"]["code"] == "not_an_image"


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"just text", 415, "not_an_image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", 415, "not_an_image"),  # never handed to Pillow's Ghostscript plugin
        (encode(photo(4))[:300], 422, "undecodable_image"),  # truncated
        (_png_header_only(20_000, 20_000), 413, "too_many_pixels"),  # 400 MP claimed in ~80 bytes
        (b"", 422, "empty_file"),
    ],
)
def test_one_bad_file_gets_its_4xx_and_a_json_error(
    client: TestClient, data: bytes, status: int, code: str
) -> None:
    r = client.post("/v1/detect", files=_files(("x.png", data)))
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and "x.png" in r.json()["error"]["message"]
    assert "Traceback" not in r.text
    assert client.get("/health").json()["status"] == "ok"


def test_mixed_batch_reports_each_bad_file_and_scores_the_rest(client: TestClient) -> None:
    good = encode(photo(5))
    r = client.post("/v1/detect", files=_files(("a.png", good), ("b.png", good[:200]), ("c.png", b"nope")))
    rows = r.json()["results"]
    assert r.status_code == 200 and "probability" in rows[0]
    assert [row.get("error", {}).get("status") for row in rows] == [None, 422, 415]


def test_request_limits(tmp_path: Path) -> None:
    small = TestClient(create_app(make_service(tmp_path, max_upload_mb=0.01, max_files=2, max_pixels=5000)))
    big = encode(np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8))  # ~19 KB, 6400 px
    assert (
        small.post("/v1/detect", files=_files(("a.png", big))).json()["error"]["code"] == "upload_too_large"
    )
    tiny = encode(photo(6, (40, 40)))
    r = small.post("/v1/detect", files=_files(("a.png", tiny), ("b.png", tiny), ("c.png", tiny)))
    assert (r.status_code, r.json()["error"]["code"]) == (413, "too_many_files")
    r = small.post("/v1/detect", files=_files(("a.png", encode(photo(6, (60, 100))))))
    assert (r.status_code, r.json()["error"]["code"]) == (413, "too_many_pixels")


def test_malformed_requests_are_400(client: TestClient) -> None:
    assert client.post("/v1/detect", content=b"x", headers={"content-type": "image/png"}).status_code == 400
    broken = b'--B\r\nContent-Disposition: form-data; name="images"; filename="a"\r\n\r\nabc'
    r = client.post("/v1/detect", content=broken, headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400 and r.json()["error"]["code"] in ("malformed_multipart", "no_images")
    r = client.post("/v1/detect", files=_files(("a.png", encode(photo(0))), field="other"))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "no_images")
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"


def test_explain_returns_verdict_evidence_heat_map_and_summary(tmp_path: Path) -> None:
    from aigclab.explain.anomaly_models import create_anomaly_model

    service = make_service(
        tmp_path, anomaly=create_anomaly_model("zero-shot-rule"), explain_max_pixels=10_000
    )
    client = TestClient(create_app(service))
    image = photo(7)
    r = client.post("/v1/explain", files=_files(("a.png", encode(image)), field="image"))
    assert r.status_code == 200, r.text
    body = r.json()
    det = tiny_detector()
    p = float(det.score([image])[0])
    assert (
        body["probability"] == pytest.approx(p, abs=1e-4)
        and body["verdict"] == det.verdicts(np.array([p]))[0]
    )
    assert {e["attribute"] for e in body["explanation"]["evidence"]} >= {"colour", "compression and noise"}
    assert "No language model was used" in body["explanation"]["summary"]
    heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    assert heat.format == "PNG" and heat.size == (
        192,
        128,
    )  # small images enlarged (x2 here), as `save_heatmap` does
    assert len(body["anomalies"]) == 6 and {"name", "phenomenon", "reasoning", "severity"} <= set(
        body["anomalies"][0]
    )
    r = client.post("/v1/explain", files=_files(("big.png", encode(photo(8, (120, 120)))), field="image"))
    assert (r.status_code, r.json()["error"]["code"]) == (413, "too_many_pixels")
    r = client.post("/v1/explain", files=_files(("a.png", encode(image))), data={"heatmap": "false"})
    assert r.status_code == 400  # wrong field name: 'image'


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    service = make_service(tmp_path, concurrency=1, queue_limit=0, retry_after_s=3)
    client = TestClient(create_app(service))
    service.gate.admitted = service.gate.capacity  # every slot taken by requests in flight
    r = client.post("/v1/detect", files=_files(("a.png", encode(photo(0)))))
    assert (r.status_code, r.headers["retry-after"], r.json()["error"]["code"]) == (503, "3", "busy")
    service.gate.admitted = 0
    assert client.post("/v1/detect", files=_files(("a.png", encode(photo(0))))).status_code == 200


def test_api_key_guards_post_endpoints_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_TEST_KEY", "s3cret")
    client = TestClient(create_app(make_service(tmp_path, api_key_env="SERVE_TEST_KEY")))
    files = _files(("a.png", encode(photo(0))))
    assert client.post("/v1/detect", files=files).status_code == 401
    assert client.post("/v1/detect", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/detect", files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/v1/detectors").status_code == 200


def test_cors_is_off_unless_origins_are_given(tmp_path: Path) -> None:
    origin = {"Origin": "https://example.org"}
    off = TestClient(create_app(make_service(tmp_path)))
    assert "access-control-allow-origin" not in off.get("/health", headers=origin).headers
    on = TestClient(create_app(make_service(tmp_path, cors_origins=["https://example.org"])))
    assert on.get("/health", headers=origin).headers["access-control-allow-origin"] == "https://example.org"


def test_internal_errors_do_not_leak_details(tmp_path: Path) -> None:
    service = make_service(tmp_path)

    def broken(uploads):  # type: ignore[no-untyped-def]
        raise RuntimeError("/secret/path in a stack frame")

    service.detect = broken  # type: ignore[method-assign]
    client = TestClient(create_app(service), raise_server_exceptions=False)
    r = client.post("/v1/detect", files=_files(("a.png", encode(photo(0)))))
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
    assert "secret" not in r.text and "Traceback" not in r.text


def test_meta_endpoints_and_pages(client: TestClient) -> None:
    assert client.get("/v1/version").json()["api"] == "1"
    detectors = client.get("/v1/detectors").json()
    assert detectors["active"]["threshold"] == 0.5 and "ftnet-tiny" in detectors["registered"]
    schema = client.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/explain", "/v1/detectors", "/health", "/v1/version"} <= set(schema["paths"])
    page = client.get("/")
    assert (
        page.status_code == 200
        and "/static/app.js" in page.text
        and "http" not in page.text.split("<body>")[1]
    )
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert "review.js" in client.get("/review").text


def _store_with_proposals(path: Path, image_path: Path) -> str:
    from aigclab.explain.annotation_store import AnnotationStore
    from aigclab.explain.quadruples import Quadruple

    Image.fromarray(photo(9)).save(image_path)
    store = AnnotationStore(path)
    store.add_image("img1", str(image_path), 96, 64)
    quads = [
        Quadruple(name=f"thing {i}", phenomenon=f"odd {i}", reasoning="because", severity=2, confidence=0.5)
        for i in range(3)
    ]
    store.put_proposals("img1", "key1", quads)
    store.close()
    return "img1"


def test_review_writes_to_the_same_store_as_the_terminal_review(tmp_path: Path) -> None:
    from aigclab.explain.annotation_store import AnnotationStore

    data = tmp_path / "data"
    data.mkdir()
    image_id = _store_with_proposals(data / "anomagent.db", tmp_path / "scene.png")
    client = TestClient(create_app(make_service(data)))
    listed = client.get("/v1/review/proposals", params={"pending": True}).json()
    assert listed["pending"] == 3 and [p["idx"] for p in listed["proposals"]] == [0, 1, 2]
    post = lambda **body: client.post("/v1/review/decision", json={"image_id": image_id, **body})  # noqa: E731
    assert post(idx=0, status="accepted", reviewer="ann").status_code == 200
    edit = {"name": "the clock", "phenomenon": "13 marks", "reasoning": "clocks have 12", "severity": 4}
    assert post(idx=1, status="edited", quadruple=edit).status_code == 200
    assert post(idx=2, status="edited").status_code == 422  # an edit needs the edited quadruple
    assert post(idx=2, status="maybe").status_code == 422
    assert post(idx=7, status="accepted").status_code == 404
    assert client.get("/v1/review/export").json()["exported"] == 0  # idx 2 still pending
    assert post(idx=2, status="rejected").json()["pending"] == 0
    store = AnnotationStore(data / "anomagent.db", create=False)
    records, stats = store.export_reviewed()
    assert stats["exported"] == 1 and [q.name for q in records[0].anomalies] == ["thing 0", "the clock"]
    store.close()
    with sqlite3.connect(data / "anomagent.db") as db:
        assert {r[0] for r in db.execute("SELECT source FROM reviews")} == {"web"}
    png = client.get(f"/v1/review/image/{image_id}")
    assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content)).size == (96, 64)
    assert client.get("/v1/review/image/nope").status_code == 404


def test_cli_serve_reports_a_bad_detector_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aigclab.cli import app
    from aigclab.errors import AigclabError

    runner = CliRunner()
    assert "--api-key-env" in runner.invoke(app, ["serve", "--help"]).output
    result = runner.invoke(
        app, ["serve", "--detector", str(tmp_path / "missing.safetensors"), "--data-dir", str(tmp_path)]
    )
    assert isinstance(result.exception, AigclabError) and "not a saved detector" in str(result.exception)
    result = runner.invoke(app, ["serve", "--api-key-env", "SERVE_TEST_UNSET_VARIABLE"])
    assert isinstance(result.exception, AigclabError) and "empty or unset" in str(result.exception)
