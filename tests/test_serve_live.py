"""The serve app under a real uvicorn on 127.0.0.1: a bounded load test, a headless-browser test, and
property-based tests of every endpoint generated from the OpenAPI schema (schemathesis)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx
from hypothesis import HealthCheck, settings
from serve_helpers import encode, live_server, make_service, photo, tiny_detector

from aigclab.serve.app import create_app


def test_bounded_load_on_a_real_server(tmp_path: Path) -> None:
    """8 clients x 2 requests against 1 worker + 2 queue places: every answer is a score or a clean 503."""
    service = make_service(tmp_path, concurrency=1, queue_limit=2)
    images = [photo(100 + i, (48, 48)) for i in range(16)]
    expected = tiny_detector().score(images)

    def client(start: int) -> list[tuple[int, int, dict]]:
        out = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(start, start + 2):
                r = http.post("/v1/detect", files=[("images", (f"{i}.png", encode(images[i]), "image/png"))])
                out.append((i, r.status_code, r.json() | {"retry": r.headers.get("retry-after")}))
        return out

    with live_server(create_app(service)) as url, ThreadPoolExecutor(8) as pool:
        answers = [a for chunk in pool.map(client, range(0, 16, 2)) for a in chunk]
        health = httpx.get(f"{url}/health").json()
    ok = [(i, body) for i, status, body in answers if status == 200]
    busy = [body for _, status, body in answers if status == 503]
    assert len(ok) + len(busy) == 16 and ok
    assert all(b["error"]["code"] == "busy" and b["retry"] == "2" for b in busy)
    for i, body in ok:
        assert body["results"][0]["probability"] == pytest.approx(expected[i], abs=1e-4)
    assert health["status"] == "ok" and health["queue"]["in_progress"] == 0


def _browser():  # type: ignore[no-untyped-def]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver packages")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(service=DriverService(driver), options=options)


def test_browser_uploads_an_image_and_reads_the_verdict(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = photo(7)
    path = tmp_path / "upload.png"
    path.write_bytes(encode(image))
    det = tiny_detector()
    p = float(det.score([image])[0])
    browser = _browser()
    try:
        with live_server(create_app(make_service(tmp_path / "data"))) as url:
            browser.get(url + "/")
            browser.find_element(By.ID, "files").send_keys(str(path))
            cell = WebDriverWait(browser, 60).until(lambda b: b.find_element(By.CSS_SELECTOR, "td.verdict"))
            assert cell.get_attribute("data-verdict") == det.verdicts(np.array([p]))[0]
            shown = browser.find_element(By.CSS_SELECTOR, "td.probability").text
            assert float(shown) == pytest.approx(p, abs=1e-3)
            browser.find_element(By.CSS_SELECTOR, "#results button").click()
            WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".explanation img"))
            summary = browser.find_element(By.CSS_SELECTOR, ".explanation .summary").text
            assert "No language model was used" in summary
            assert browser.find_elements(By.CSS_SELECTOR, ".explanation table tbody tr")
    finally:
        browser.quit()


def test_browser_review_page_accepts_and_edits_into_the_store(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_serve_api import _store_with_proposals

    from aigclab.explain.annotation_store import AnnotationStore

    data = tmp_path / "data"
    data.mkdir()
    _store_with_proposals(data / "anomagent.db", tmp_path / "scene.png")
    browser = _browser()
    try:
        with live_server(create_app(make_service(data))) as url:
            browser.get(url + "/review")
            wait = WebDriverWait(browser, 60)
            cards = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".proposal"))
            assert len(cards) == 3
            cards[0].find_element(By.CSS_SELECTOR, "button.accept").click()
            name = cards[1].find_element(By.CSS_SELECTOR, "input[name=name]")
            name.clear()
            name.send_keys("the clock")
            cards[1].find_element(By.CSS_SELECTOR, "button.edit").click()
            cards[2].find_element(By.CSS_SELECTOR, "button.reject").click()
            wait.until(
                lambda b: all("reviewed" in c.find_element(By.CSS_SELECTOR, ".state").text for c in cards)
            )
    finally:
        browser.quit()
    store = AnnotationStore(data / "anomagent.db", create=False)
    assert [p.review for p in store.proposals()] == ["accepted", "edited", "rejected"]
    records, _ = store.export_reviewed()
    assert [q.name for q in records[0].anomalies] == ["thing 0", "the clock"]
    store.close()


schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    service = make_service(tmp_path_factory.mktemp("schema"), concurrency=1, queue_limit=64)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(service))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
)
def test_every_endpoint_answers_as_its_schema_says(case) -> None:  # type: ignore[no-untyped-def]
    """No 5xx, only documented statuses, JSON bodies matching the schema, invalid input rejected.

    Random bytes are valid per the schema (``format: binary``) yet not images, so the check that
    schema-valid input is accepted does not apply to the upload endpoints.
    """
    from schemathesis.checks import positive_data_acceptance

    case.call_and_validate(excluded_checks=[positive_data_acceptance])
