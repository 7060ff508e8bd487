"""The FastAPI app: detection, explanation, the review queue, health/version, and the web pages.

Endpoints (all JSON; errors are ``{"error": {"status", "code", "message"}}`` with a 4xx/5xx status and
never a stack trace):

- ``POST /v1/detect``: multipart field ``images`` (one or many files) -> one row per file.
- ``POST /v1/explain``: multipart field ``image`` (one file), optional field ``heatmap`` (true/false).
- ``GET /v1/detectors``: the active detector and every registered one.
- ``GET /health``, ``GET /v1/version``, ``GET /openapi.json``.
- ``GET /v1/review/proposals``, ``POST /v1/review/decision``, ``GET /v1/review/image/{image_id}``:
  the AnomAgent review queue (`aigclab.serve.review_routes`).
- ``GET /`` and ``GET /review``: the web pages (static HTML and JS from the package; no build, no CDN).

POST endpoints need the ``X-API-Key`` header when the configured environment variable holds a key.

Example:
    >>> from aigclab.serve.app import create_app  # doctest: +SKIP
    >>> app = create_app(Service.load(ServeConfig()))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import platform
import secrets
from importlib import metadata, resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from aigclab.serve.service import Service
from aigclab.serve.uploads import ApiError, read_form

__all__ = ["API_VERSION", "create_app"]

API_VERSION = "1"
log = logging.getLogger("aigclab.serve")


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    text = {
        400: "malformed request",
        401: "missing or wrong API key",
        404: "not found",
        413: "too large (bytes, files or pixels)",
        415: "not a supported image (sniffed from the content)",
        422: "an image that does not decode, or invalid fields",
        503: "busy: retry after the Retry-After header's seconds",
    }
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}


def _multipart_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


_BINARY = {"type": "string", "format": "binary"}


def create_app(service: Service) -> FastAPI:
    """The app for one loaded `Service` (models are shared by all requests)."""
    app = FastAPI(
        title="aigclab serve",
        version=metadata.version("aigclab"),
        description="Detect AI-generated images, explain the verdict, and review AnomAgent annotations.",
        docs_url=None,  # Swagger UI loads from a CDN; the schema is at /openapi.json
        redoc_url=None,
    )
    app.state.service = service
    _install_error_handlers(app)
    if service.config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(service.config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type"],
        )
    require_key = _api_key_check(service)

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, Any]:
        """Liveness, the active detector and the work queue."""
        return {"status": "ok", "detector": service.config.detector, "queue": service.gate.stats()}

    @app.get("/v1/version", tags=["meta"])
    def version() -> dict[str, str]:
        import numpy
        import torch

        return {
            "aigclab": metadata.version("aigclab"),
            "api": API_VERSION,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
        }

    @app.get("/v1/detectors", tags=["detect"])
    def detectors() -> dict[str, Any]:
        """The detector this server loaded (used by every request) and the registered detector names."""
        from aigclab.detect.base import list_detectors

        return {"active": service.describe(), "registered": list_detectors()}

    @app.post(
        "/v1/detect",
        tags=["detect"],
        dependencies=[Depends(require_key)],
        responses=error_responses(400, 401, 413, 415, 422, 503),
        openapi_extra=_multipart_body({"images": {"type": "array", "items": _BINARY}}, ["images"]),
    )
    async def detect(request: Request) -> dict[str, Any]:
        """P(AI-generated) and verdict per uploaded image; files that fail get an error row.

        A request with one file that fails is answered with that file's error status.
        """
        async with service.gate.slot():
            form = await read_form(request, service.limits)
            files = [f for f in form.files if f.field == "images"]
            if not files:
                raise ApiError(400, "no_images", "no file in the multipart field 'images'")
            rows = await service.gate.run(service.detect, files)
        if all("error" in r for r in rows):
            first = rows[0]["error"]
            raise ApiError(first["status"], first["code"], first["message"])
        return {"detector": service.describe(), "results": rows}

    @app.post(
        "/v1/explain",
        tags=["explain"],
        dependencies=[Depends(require_key)],
        responses=error_responses(400, 401, 413, 415, 422, 503),
        openapi_extra=_multipart_body(
            {"image": _BINARY, "heatmap": {"type": "string", "enum": ["true", "false"]}}, ["image"]
        ),
    )
    async def explain(request: Request) -> dict[str, Any]:
        """Verdict, probability, evidence table, explanation, heat map and (when configured) quadruples."""
        async with service.gate.slot():
            form = await read_form(request, service.limits)
            files = [f for f in form.files if f.field == "image"]
            if len(files) != 1:
                raise ApiError(400, "one_image", "send exactly one file in the multipart field 'image'")
            heatmap = form.fields.get("heatmap", "true").lower()
            if heatmap not in ("true", "false"):
                raise ApiError(400, "bad_field", f"heatmap must be true or false, got {heatmap!r}")
            return await service.gate.run(service.explain, files[0], heatmap == "true")

    from aigclab.serve.review_routes import review_router

    app.include_router(review_router(service, require_key))
    _add_pages(app)
    return app


def _api_key_check(service: Service):  # type: ignore[no-untyped-def]
    env = service.config.api_key_env
    key = os.environ.get(env, "") if env else ""

    def require_key(request: Request) -> None:
        if key and not secrets.compare_digest(request.headers.get("x-api-key", "").encode(), key.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header")

    return require_key


def _install_error_handlers(app: FastAPI) -> None:
    def body(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(
            {"error": {"status": status, "code": code, "message": message}}, status, headers=headers
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return body(err.status, err.code, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return body(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}.get(
            err.status_code, "http_error"
        )
        return body(err.status_code, code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return body(500, "internal", "internal server error (see the server log)")


def _add_pages(app: FastAPI) -> None:
    static = resources.files("aigclab.serve") / "static"
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text())

    @app.get("/review", include_in_schema=False)
    def review_page() -> HTMLResponse:
        return HTMLResponse((static / "review.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        suffix = os.path.splitext(name)[1]
        entry = static / name
        if "/" in name or suffix not in types or not entry.is_file():
            raise ApiError(404, "not_found", f"no static file {name!r}")
        return Response(entry.read_bytes(), media_type=types[suffix])
